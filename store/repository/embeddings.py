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
                     key_kind: str, token: np.ndarray | None = None, token_word: str | None = None,
                     token_count: int | None = None) -> tuple[m.Embedding, bool]:
    """Content-addressed insert of a bank's mean [1, 77, D] and key [D] under one encoder → (row, created).

    ``token`` [D] (revision 0010) is the mean at the concept word's own tokens, with the word and the number of
    sentences that contain it. A stored embedding without one gains it here (:func:`fill_token_mean`)."""
    lock(s, "embedding", f"{bank_id}:{encoder_id}")
    row = s.scalar(select(m.Embedding).where(m.Embedding.bank_id == bank_id, m.Embedding.encoder_id == encoder_id))
    if row is not None:
        if token_word is not None and row.token_word is None:
            fill_token_mean(s, row, token, token_word, token_count)
        return row, False
    enc = s.get(m.Encoder, encoder_id)
    bank = s.get(m.Bank, bank_id)
    what = f"embedding of {bank.concept if bank else bank_id}"
    if enc is not None:
        for kind, array in (("mean", mean), ("key", key), ("token", token)):
            if array is None:
                continue
            check_shape(enc, kind, array, what)
    try:
        row = m.Embedding(bank_id=bank_id, encoder_id=encoder_id, mean=to_bytes(mean), key=to_bytes(key),
                          key_kind=key_kind, **_token_columns(token, token_word, token_count))
    except VectorError as exc:
        raise StoreError(f"{what}: {exc}") from None
    s.add(row)
    s.flush()
    return row, True


def _token_columns(token, word, count) -> dict:
    """The revision-0010 columns: none when no word was looked for; the word and its count (0: no sentence has
    it, so no mean) when one was."""
    if word is None:
        if token is not None:
            raise StoreError("a token-aligned mean needs the word it was taken at")
        return {}
    count = int(count or 0)
    if (token is None) != (count == 0) or count < 0:
        raise StoreError(f"a token-aligned mean of {word!r} from {count} sentences is inconsistent: a mean needs "
                         "at least one sentence with the word, and a count needs its mean")
    return {"token_mean": None if token is None else to_bytes(np.asarray(token, dtype=np.float32)),
            "token_word": str(word)[:200], "token_count": count}


def fill_token_mean(s: Session, row: m.Embedding, token: np.ndarray | None, word: str, count: int) -> None:
    """Give an embedding stored before revision 0010 its token-aligned mean [D] (or the note that its bank never
    contains the word) — once: the columns are fill-once (``store.models.FILL_ONCE_COLUMNS``), so a stored value
    is never replaced."""
    if row.token_word is not None:
        return
    if token is not None:
        check_shape(row.encoder, "token", token, f"embedding of {row.bank.concept}")
    try:
        values = _token_columns(token, word, count)
    except VectorError as exc:
        raise StoreError(f"embedding of {row.bank.concept}: {exc}") from None
    for name, value in values.items():
        setattr(row, name, value)
    s.flush()


def embedding_token(s: Session, embedding_id: int, dim: int | None = None) -> np.ndarray | None:
    """The token-aligned mean [D] of an embedding, or None (made before revision 0010, or no sentence of its bank
    contains the word)."""
    data = s.get(m.Embedding, embedding_id).token_mean
    return None if data is None else from_bytes(data, (dim,))


def shared_encoder(s: Session, bank_a: int, bank_b: int) -> str | None:
    """The newest encoder under which both banks are already encoded, if any."""
    a = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == bank_a)))
    b = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == bank_b)))
    common = sorted(a & b)
    return s.get(m.Encoder, common[-1]).fingerprint if common else None


def embedding_key(s: Session, embedding_id: int, dim: int | None = None) -> np.ndarray:
    return from_bytes(s.get(m.Embedding, embedding_id).key, (dim,))
