"""Encoder rows: one per text encoder (its fingerprint and facts), found or inserted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from p2pz.store import models as m
from p2pz.store.db import StoreError

from .core import NotFoundError, lock


ENCODER_FIELDS = ("fingerprint", "model", "subfolder", "revision", "architecture", "hidden_size", "max_length",
                  "pad_id", "family", "parts", "key_size")
# What an encoder *is*, beside its fingerprint: every stored tensor's shape follows from these, so no import or
# build may state them differently for a known fingerprint. ``model``, ``subfolder`` and ``revision`` only say
# where it was loaded from (one encoder, many folders) and are not compared.
IDENTITY_FIELDS = ("architecture", "hidden_size", "key_size", "max_length", "pad_id", "family", "parts")


def _identity(facts) -> dict:
    get = facts.get if isinstance(facts, dict) else lambda k: getattr(facts, k, None)
    out = {k: get(k) for k in IDENTITY_FIELDS}
    out["key_size"] = out["key_size"] or out["hidden_size"]  # None means "the same as D"
    out["family"] = out["family"] or "sd"
    return out


def encoder_mismatch(row: m.Encoder, facts: dict) -> tuple[str, object, object] | None:
    """The first identity field where ``facts`` differ from the stored encoder → (field, stated, stored)."""
    stored, stated = _identity(row), _identity(facts)
    for k in IDENTITY_FIELDS:
        if stated[k] != stored[k]:
            return k, stated[k], stored[k]
    return None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def encoder_row(s: Session, facts: dict) -> tuple[m.Encoder, bool]:
    """The encoder with ``facts["fingerprint"]``, inserted from ``facts`` when new → (row, created). A known
    fingerprint stated with other facts (any of :data:`IDENTITY_FIELDS`) is refused: every import (file, Hub,
    another registry) and every build goes through here, so no record can be stored under a re-declared encoder."""
    fp = facts["fingerprint"]
    lock(s, "encoder", fp)
    row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fp))
    if row is not None:
        bad = encoder_mismatch(row, facts)
        if bad is not None:
            field, stated, stored = bad
            raise StoreError(f"encoder {fp[:12]} is stated with {field}={_shown(stated)} but this registry stores it "
                             f"with {field}={_shown(stored)}; one fingerprint is one encoder, so nothing was stored "
                             "(the library or model disagrees with it; `p2pz db check` checks this registry)")
        return row, False
    row = m.Encoder(**{k: facts.get(k) for k in ENCODER_FIELDS if facts.get(k) is not None})
    s.add(row)
    s.flush()
    return row, True


def encoder_facts(row: m.Encoder) -> dict:
    return {k: getattr(row, k) for k in ENCODER_FIELDS}


def tensor_shape(row: m.Encoder, kind: str) -> tuple[int, ...]:
    """The shape every stored tensor of ``kind`` has under this encoder: ``key`` (an embedding's or a direction's
    search key) [key_dim], ``mean`` (an embedding) [1, max_length, D], ``token`` (a token-aligned mean) [D]."""
    if kind == "token":
        return (row.hidden_size,)
    return (row.key_dim,) if kind == "key" else (1, row.max_length, row.hidden_size)


def check_shape(row: m.Encoder, kind: str, array, what: str) -> None:
    """Refuse a tensor whose shape is not :func:`tensor_shape`'s: nothing of the wrong size is ever stored."""
    got, want = tuple(getattr(array, "shape", ())), tensor_shape(row, kind)
    if got != want:
        raise StoreError(f"{what}: its {kind} has shape {list(got)} but encoder {row.fingerprint[:12]} makes "
                         f"{list(want)}; nothing was stored (it was not made by this encoder)")


def encoder_by_fingerprint(s: Session, fingerprint: str) -> m.Encoder:
    row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fingerprint))
    if row is None:
        raise NotFoundError(f"no encoder {fingerprint[:12]} in this registry")
    return row


def encoders(s: Session) -> list[m.Encoder]:
    return list(s.scalars(select(m.Encoder).order_by(m.Encoder.id)))
