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
from sqlalchemy.exc import DatabaseError, OperationalError

from store.db import StoreError, explain_db_error

# The newest revision in migrations/versions; a test checks it equals Alembic's own head.
HEAD_REVISION = "0003"


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
            if not engine.dialect.has_table(conn, "alembic_version"):
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return row[0] if row else None
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
        raise StoreError(explain_db_error(engine, exc)) from None
