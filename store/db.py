"""Engines, sessions and schema upgrades (DESIGN §3).

SQLite by default (WAL, foreign keys, busy timeout); any SQLAlchemy URL works. The schema is only ever
created or changed by the Alembic revisions shipped in the ``migrations`` package, which is located through
its import path so it works from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

# The newest revision in migrations/versions. Opening a database compares against this constant so the
# common case (already at head) never imports Alembic; tests check it equals Alembic's own head.
HEAD_REVISION = "0003"
BUSY_TIMEOUT_MS = 30_000


class StoreError(RuntimeError):
    """A database problem a user can act on (bad URL, corrupt file, newer schema, read-only file)."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except Exception:  # read-only file or medium: WAL cannot be switched on; reads still work
        pass
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would otherwise defer it).
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn) -> None:
    """Writers take the write lock at BEGIN (``BEGIN IMMEDIATE``), so concurrent writers wait on the busy
    timeout instead of failing on a lock upgrade half-way through; readers use a plain deferred BEGIN."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("p2pz_write") else "BEGIN")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; SQLite files get their folder created and the pragmas above."""
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreError(f"not a database URL: {url!r} (try sqlite:///path/registry.db)") from None
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        elif not db or db == ":memory:" or "mode=memory" in db:  # one shared in-memory database per engine
            from sqlalchemy.pool import StaticPool

            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except Exception as exc:  # missing driver, bad options
        raise StoreError(f"cannot open database {parsed.render_as_string(hide_password=True)}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def alembic_config(engine_or_url):
    """An Alembic ``Config`` pointing at the shipped ``migrations`` package."""
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if isinstance(engine_or_url, str):
        cfg.set_main_option("sqlalchemy.url", engine_or_url.replace("%", "%%"))
    else:
        cfg.attributes["engine"] = engine_or_url
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision stamped in the database, or None for an empty database."""
    try:
        with engine.connect() as conn:
            has_table = engine.dialect.has_table(conn, "alembic_version")
            if not has_table:
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return row[0] if row else None
    except DatabaseError as exc:
        raise StoreError(_explain_db_error(engine, exc)) from None


def _explain_db_error(engine: Engine, exc: Exception) -> str:
    msg = str(getattr(exc, "orig", exc)).splitlines()[0]
    where = engine.url.render_as_string(hide_password=True)
    if "file is not a database" in msg or "malformed" in msg:
        return f"{where} is not a valid SQLite database ({msg}); it was left untouched — restore it from a backup or point --db elsewhere"
    if "readonly" in msg or "read-only" in msg:
        return f"{where} is read-only ({msg}); reads work, but writing needs a writable database file and folder"
    if "unable to open" in msg:
        return f"cannot open {where} ({msg}); check that the path exists and is writable"
    return f"database error on {where}: {msg}"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema through Alembic (``p2pz db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def ensure_schema(engine: Engine) -> None:
    """Upgrade a fresh or older database to head; refuse one from a newer p2pz."""
    rev = current_revision(engine)
    if rev == HEAD_REVISION:
        return
    if rev is not None and rev not in known_revisions():
        raise StoreError(
            f"the database is at schema revision {rev}, newer than this p2pz knows (head {HEAD_REVISION}); "
            "upgrade p2pz to use it"
        )
    try:
        upgrade(engine)
    except OperationalError as exc:
        raise StoreError(_explain_db_error(engine, exc)) from None


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


@contextlib.contextmanager
def session_scope(factory: sessionmaker, write: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back everything on any error.

    ``write=True`` starts the transaction as a writer (SQLite: ``BEGIN IMMEDIATE``).
    """
    session = factory()
    try:
        if write:
            session.connection(execution_options={"p2pz_write": True})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
