"""Schema migrations: the Alembic environment, its revisions, and the code that runs them.

``ensure_schema(engine)`` is what every registry open calls: it compares the stamped revision with
:data:`HEAD_REVISION` first, so the common case (already at head) never imports Alembic. ``upgrade`` and
``downgrade`` run the shipped revisions (``p2pz db upgrade``). The revisions are found through this package's
own path, so they work from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, DBAPIError

from p2pz.store.db import (StoreError, explain_db_error, foreign_key_violations, is_read_only, shown_url,
                      sqlite_foreign_keys_off)

# The newest revision in migrations/versions; a test checks it equals Alembic's own head.
HEAD_REVISION = "0010"


def alembic_config(engine_or_url):
    """An Alembic ``Config`` pointing at the shipped revisions, bound to an engine (or a URL)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    if isinstance(engine_or_url, str):
        cfg.set_main_option("sqlalchemy.url", engine_or_url.replace("%", "%%"))
    else:
        cfg.attributes["engine"] = engine_or_url
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision stamped in the database, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return _revision_on(conn)
    except DatabaseError as exc:
        raise StoreError(explain_db_error(engine, exc)) from None


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


def head() -> str:
    """Alembic's own head revision of the shipped scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema (``p2pz db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


SCHEMA_LOCK = "p2pz:schema"


def ensure_schema(engine: Engine) -> None:
    """Upgrade a fresh or older database to head; refuse one from a newer p2pz.

    Safe when many clients open a new database at once: the upgrade runs under a lock — a PostgreSQL advisory
    lock, SQLite's write lock (``BEGIN IMMEDIATE``) — and the revision is read again inside it, so exactly one
    client upgrades and the others find the schema at head.
    """
    rev = current_revision(engine)
    if rev == HEAD_REVISION:
        return
    _refuse_unknown(rev)
    if is_read_only(engine):  # nothing is attempted on a database this process cannot write
        where = shown_url(engine)
        raise StoreError(f"{where} is read-only and its schema is " + (
            "not created yet" if rev is None else f"at revision {rev}, older than this p2pz's {HEAD_REVISION}")
            + "; run p2pz db upgrade as a user who can write it, or use the p2pz it was made with")
    try:
        if engine.dialect.name == "postgresql":
            _upgrade_under_advisory_lock(engine)
        elif engine.dialect.name == "sqlite":
            _upgrade_under_write_lock(engine)
        else:
            upgrade(engine)
    except DBAPIError as exc:
        raise StoreError(explain_db_error(engine, exc)) from None


def _refuse_unknown(rev: str | None) -> None:
    if rev is not None and rev != HEAD_REVISION and rev not in known_revisions():
        raise StoreError(
            f"the database is at schema revision {rev}, newer than this p2pz knows (head {HEAD_REVISION}); "
            "upgrade p2pz to use it"
        )


def _revision_on(conn) -> str | None:
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return row[0] if row else None


def _upgrade_on(conn) -> None:
    """Run the revisions on ``conn`` inside the transaction the caller holds."""
    from alembic import command

    cfg = alembic_config(conn.engine)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _upgrade_under_advisory_lock(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": SCHEMA_LOCK})
        conn.commit()
        try:
            with conn.begin():
                rev = _revision_on(conn)
                _refuse_unknown(rev)
                if rev != HEAD_REVISION:
                    _upgrade_on(conn)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": SCHEMA_LOCK})
            conn.commit()


def _upgrade_under_write_lock(engine: Engine) -> None:
    with engine.connect() as conn, sqlite_foreign_keys_off(conn):
        conn.execution_options(p2pz_write=True)
        with conn.begin():  # BEGIN IMMEDIATE: the database's write lock, held until the upgrade commits
            rev = _revision_on(conn)
            _refuse_unknown(rev)
            if rev != HEAD_REVISION:
                _upgrade_on(conn)
                bad = foreign_key_violations(conn)
                if bad:
                    raise StoreError(f"the schema upgrade left {bad} rows with broken foreign keys; the "
                                     "database was left as it was")
