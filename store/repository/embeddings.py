"""Embedding rows: one per (bank, encoder), the mean [1, 77, D] and the pooled key [D]."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from p2pz.store import models as m
from p2pz.store.db import StoreError
from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import VectorError, from_bytes, to_bytes

from .core import lock
from .encoders import check_shape


def find_embedding(s: Session, concept: str, sha256: str, fingerprint: str) -> m.Embedding | None:
    """The stored embedding of the bank (concept, sha256) under the encoder ``fingerprint``, if any."""
    return s.scalar(select(m.Embedding).join(m.Bank).join(m.Encoder).where(
        m.Bank.concept == concept, m.Bank.sha256 == sha256, m.Encoder.fingerprint == fingerprint))


def insert_embedding(s: Session, *, bank_id: int, encoder_id: int, mean: np.ndarray, key: np.ndarray,
                     key_kind: str) -> tuple[m.Embedding, bool]:
    """Content-addressed insert of a bank's mean [1, 77, D] and key [D] under one encoder → (row, created)."""
    lock(s, "embedding", f"{bank_id}:{encoder_id}")
    row = s.scalar(select(m.Embedding).where(m.Embedding.bank_id == bank_id, m.Embedding.encoder_id == encoder_id))
    if row is not None:
        return row, False
    enc = s.get(m.Encoder, encoder_id)
    if enc is not None:
        bank = s.get(m.Bank, bank_id)
        for kind, array in (("mean", mean), ("key", key)):
            check_shape(enc, kind, array, f"embedding of {bank.concept if bank else bank_id}")
    try:
        row = m.Embedding(bank_id=bank_id, encoder_id=encoder_id, mean=to_bytes(mean), key=to_bytes(key),
                          key_kind=key_kind)
    except VectorError as exc:
        bank = s.get(m.Bank, bank_id)
        raise StoreError(f"embedding of {bank.concept if bank else bank_id}: {exc}") from None
    s.add(row)
    s.flush()
    return row, True


def shared_encoder(s: Session, bank_a: int, bank_b: int) -> str | None:
    """The newest encoder under which both banks are already encoded, if any."""
    a = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == bank_a)))
    b = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == bank_b)))
    common = sorted(a & b)
    return s.get(m.Encoder, common[-1]).fingerprint if common else None


def embedding_key(s: Session, embedding_id: int, dim: int | None = None) -> np.ndarray:
    return from_bytes(s.get(m.Embedding, embedding_id).key, (dim,))
