"""Engines, sessions and transactions (docs/architecture.md, "Store").

SQLite by default (WAL, foreign keys, busy timeout); any SQLAlchemy URL works (PostgreSQL is tested). The
schema is created and changed only by the Alembic revisions of the ``migrations`` package, which sits above
this module: nothing here imports it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import quote
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

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


def _read_only_sqlite(parsed):
    """A SQLite file this process may read but not write (the file, or the folder its journal and ``-shm`` files
    go in) → the URL that opens it read-only (``mode=ro``), else None. When the folder is not writable either,
    no ``-shm`` can be made beside it, so it is opened ``immutable`` — a snapshot, which is exact as long as no
    ``-wal`` holds commits not yet merged into the file (then plain ``mode=ro``, which reads the WAL)."""
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:") or parsed.query.get("uri"):
        return None
    path = Path(db).expanduser()
    if not path.is_file():
        return None
    folder_writable = os.access(path.parent, os.W_OK | os.X_OK)
    if os.access(path, os.W_OK) and folder_writable:
        return None
    query = {"mode": "ro", "uri": "true"}
    wal = Path(f"{path}-wal")
    if not folder_writable and not (wal.is_file() and wal.stat().st_size > 0):
        query["immutable"] = "1"
    return parsed.set(database="file:" + quote(str(path.resolve())), query=query)


@contextlib.contextmanager
def sqlite_foreign_keys_off(conn) -> Iterator[None]:
    """SQLite's foreign keys off on ``conn`` for a schema change, then back on. Batch migrations recreate tables
    (copy, DROP, RENAME) and the DROP must not cascade into child tables. The pragma only works outside a
    transaction, so it is set on the raw connection before the caller begins one; the caller checks
    :func:`foreign_key_violations` before it commits. No-op on other databases."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.commit()
        raw.execute("PRAGMA foreign_keys=ON")


def foreign_key_violations(conn) -> int:
    """Rows whose foreign keys point nowhere (SQLite's ``foreign_key_check``; 0 elsewhere)."""
    if conn.dialect.name != "sqlite":
        return 0
    return len(conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall())


def is_read_only(engine: Engine) -> bool:
    """Whether :func:`make_engine` opened this database read-only (a SQLite file this process cannot write)."""
    return engine.url.get_backend_name() == "sqlite" and engine.url.query.get("mode") == "ro"


def shown_url(engine: Engine) -> str:
    """The database as messages name it: no password, and a read-only SQLite file by its path."""
    if is_read_only(engine):
        return f"sqlite:///{unquote(engine.url.database.removeprefix('file:'))}"
    return engine.url.render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; SQLite files get their folder created and the pragmas above. A SQLite file
    this process cannot write is opened read-only (:func:`_read_only_sqlite`): reads work, writes fail with
    one line saying so."""
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreError(f"not a database URL: {url!r} (try sqlite:///path/registry.db)") from None
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
        read_only = _read_only_sqlite(parsed)
        if read_only is not None:
            parsed = read_only
        elif db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        elif not db or db == ":memory:" or "mode=memory" in db:  # one shared in-memory database per engine

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


def explain_db_error(engine: Engine, exc: Exception) -> str:
    """One line naming a database problem and its fix (no URL password)."""
    msg = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    where = shown_url(engine)
    if "file is not a database" in msg or "malformed" in msg:
        return (f"{where} is not a valid SQLite database ({msg}); it was left untouched — restore it from a backup "
                "or point --db elsewhere")
    if "readonly" in msg or "read-only" in msg:
        return f"{where} is read-only ({msg}); reads work, but writing needs a writable database file and folder"
    if "unable to open" in msg:
        return f"cannot open {where} ({msg}); check that the path exists and is writable"
    return f"database error on {where}: {msg}"


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


class Database:
    """An engine plus its session factory: ``with db.read() as s`` / ``with db.write() as s`` is one transaction.

    Database errors inside a transaction (a read-only file, a lost connection) come out as :class:`StoreError`
    with a one-line explanation; everything is rolled back.
    """

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def read(self):
        return self._scope(write=False)

    def write(self):
        return self._scope(write=True)

    @contextlib.contextmanager
    def _scope(self, write: bool):
        try:
            with session_scope(self.factory, write=write) as s:
                yield s
        except DBAPIError as exc:  # a read-only file, a lost server, a constraint a concurrent writer broke
            raise StoreError(explain_db_error(self.engine, exc)) from None

    def dispose(self) -> None:
        self.engine.dispose()
