"""Bank rows: content-addressed by (concept, sha256 of the sentences), versioned per concept."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from p2pz.store import models as m

from .core import NotFoundError, lock


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
    """Content-addressed insert: the same sentences for the same concept return the stored version."""
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
