"""What every record type shares: the not-found error, the writers' lock, nesting depth, and the generation
counter (grows with every change that affects search, so search indexes know when they are stale)."""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from p2pz.store import models as m
from p2pz.store.db import StoreError


MAX_NESTING = 32  # combinations of combinations, at most this deep


class NotFoundError(StoreError, LookupError):
    """A bank, direction, student, job or encoder that the database does not hold. ``fix`` names what would
    help (``"bank"``, ``"direction"``, ``"student"``, ``"deprecated-student"``, ``"job"``) and ``name`` the missing
    thing, so the caller can add how to do it in its own terms (a CLI command, an endpoint): this layer knows
    neither."""

    def __init__(self, message: str, fix: str | None = None, name: str | None = None):
        super().__init__(message)
        self.fix, self.name = fix, name


def lock(s: Session, kind: str, key) -> None:
    """Serialize writers of one (kind, key) inside the database.

    SQLite writers already hold the database write lock (``BEGIN IMMEDIATE``); PostgreSQL takes a
    transaction-scoped advisory lock, so version numbers stay unique and gap-free per name and content
    addressing sees every committed row.
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"p2pz:{kind}:{key}"})



def bump_generation(s: Session) -> None:
    s.execute(update(m.Meta).where(m.Meta.key == "generation").values(value=m.Meta.value + 1))


def generation(s: Session) -> int:
    return int(s.scalar(select(m.Meta.value).where(m.Meta.key == "generation")) or 0)
