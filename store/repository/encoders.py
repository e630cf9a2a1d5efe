"""Encoder rows: one per text encoder (its fingerprint and facts), found or inserted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from p2pz.store import models as m
from p2pz.store.db import StoreError

from .core import NotFoundError, lock


ENCODER_FIELDS = ("fingerprint", "model", "subfolder", "revision", "architecture", "hidden_size", "max_length",
                  "pad_id", "family", "parts", "key_size")


def encoder_row(s: Session, facts: dict) -> tuple[m.Encoder, bool]:
    """The encoder with ``facts["fingerprint"]``, inserted from ``facts`` when new → (row, created)."""
    fp = facts["fingerprint"]
    lock(s, "encoder", fp)
    row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fp))
    if row is not None:
        if row.hidden_size != facts["hidden_size"]:
            raise StoreError(f"encoder {fp[:12]} is claimed with D={facts['hidden_size']} but this registry knows "
                             f"it as D={row.hidden_size}")
        return row, False
    row = m.Encoder(**{k: facts.get(k) for k in ENCODER_FIELDS if facts.get(k) is not None})
    s.add(row)
    s.flush()
    return row, True


def encoder_facts(row: m.Encoder) -> dict:
    return {k: getattr(row, k) for k in ENCODER_FIELDS}


def encoder_by_fingerprint(s: Session, fingerprint: str) -> m.Encoder:
    row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fingerprint))
    if row is None:
        raise NotFoundError(f"no encoder {fingerprint[:12]} in this registry")
    return row


def encoders(s: Session) -> list[m.Encoder]:
    return list(s.scalars(select(m.Encoder).order_by(m.Encoder.id)))
