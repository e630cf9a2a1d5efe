"""Bank rows: content-addressed by (concept, sha256 of the sentences), versioned per concept."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from p2pz.store import models as m
from p2pz.store.db import StoreError

from .core import NotFoundError, lock

# The one cap on a bank's sentences, however the bank comes in (generated, read from a file, imported, pulled):
# every insert passes :func:`check_bank_size`, and the front ends bound their ``-n``/``n`` by it.
MAX_BANK_SENTENCES = 100_000


def check_bank_size(concept: str, n: int) -> None:
    """Refuse a bank of more than :data:`MAX_BANK_SENTENCES` sentences, in one line naming the fix."""
    if n > MAX_BANK_SENTENCES:
        raise StoreError(f"bank {concept!r} holds {n} sentences, over the cap of {MAX_BANK_SENTENCES} per bank; "
                         f"keep at most {MAX_BANK_SENTENCES} of them (bank create -n, or split the sentences into "
                         "several banks)")


def bank_by_sha(s: Session, concept: str, sha256: str) -> m.Bank | None:
    return s.scalar(select(m.Bank).where(m.Bank.concept == concept, m.Bank.sha256 == sha256))


def latest_bank(s: Session, concept: str, with_sentences: bool = False) -> m.Bank | None:
    """The concept's latest bank version; with ``with_sentences``, the latest that has sentences (what a build
    takes for a bare concept: never a mean embedding imported from a ``.pt`` file)."""
    q = select(m.Bank).where(m.Bank.concept == concept)
    if with_sentences:
        q = q.where(m.Bank.n_sentences > 0)
    return s.scalar(q.order_by(m.Bank.version.desc()).limit(1))


def bank_row(s: Session, concept: str, version: int | None) -> m.Bank:
    """``concept@version``, or the latest version when ``version`` is None."""
    if version is None:
        row = latest_bank(s, concept)
    else:
        row = s.scalar(select(m.Bank).where(m.Bank.concept == concept, m.Bank.version == version))
    if row is None:
        known = s.scalars(select(m.Bank.version).where(m.Bank.concept == concept)).all()
        if known:
            raise NotFoundError(f"bank {concept}@{version} does not exist; versions: {sorted(known)}")
        raise NotFoundError(f"no bank for concept {concept!r}", fix="bank", name=concept)
    return row


def banks(s: Session, concept: str | None = None) -> list[m.Bank]:
    q = select(m.Bank).order_by(m.Bank.concept, m.Bank.version)
    if concept:
        q = q.where(m.Bank.concept == concept)
    return list(s.scalars(q))


def insert_bank(s: Session, *, concept: str, sha256: str, generator: str, params: dict, sentences: list[str],
                note: str | None = None) -> tuple[m.Bank, bool]:
    """Content-addressed insert: the same sentences for the same concept return the stored version. More than
    :data:`MAX_BANK_SENTENCES` sentences are refused."""
    check_bank_size(concept, len(sentences))
    lock(s, "bank", concept)
    row = bank_by_sha(s, concept, sha256)
    if row is not None:
        return row, False
    version = (s.scalar(select(func.max(m.Bank.version)).where(m.Bank.concept == concept)) or 0) + 1
    row = m.Bank(concept=concept, version=version, generator=generator, params=params, sentences=sentences,
                 n_sentences=len(sentences), sha256=sha256, note=note)
    s.add(row)
    s.flush()
    return row, True


def bank_sentence_page(s: Session, bank_id: int, offset: int = 0, limit: int = 100) -> list[str]:
    """Sentences ``offset`` … ``offset + limit`` of a bank, cut out by the database (the JSON array is never
    loaded into Python whole: a page of a big bank costs its own size)."""
    offset, limit = max(0, int(offset)), max(0, int(limit))
    if limit == 0:
        return []
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        q = text("SELECT j.value FROM banks, json_each(banks.sentences) AS j WHERE banks.id = :id "
                 "ORDER BY j.key LIMIT :limit OFFSET :offset")
    elif dialect == "postgresql":
        q = text("SELECT t.value FROM banks, json_array_elements_text(banks.sentences) WITH ORDINALITY "
                 "AS t(value, i) WHERE banks.id = :id ORDER BY t.i LIMIT :limit OFFSET :offset")
    else:  # no JSON table function known here: the whole column, sliced
        row = s.get(m.Bank, bank_id)
        return list(row.sentences[offset:offset + limit]) if row is not None else []
    return list(s.scalars(q, {"id": bank_id, "limit": limit, "offset": offset}))
