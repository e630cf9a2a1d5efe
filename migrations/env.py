"""Alembic environment: runs revisions on the connection or engine handed over by
:func:`migrations.alembic_config`, or on ``sqlalchemy.url`` when run from the ``alembic`` command line."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from p2pz.store.db import foreign_key_violations, sqlite_foreign_keys_off
from p2pz.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # the caller holds a transaction and the schema lock (migrations.ensure_schema)
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          transaction_per_migration=False)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = config.attributes.get("engine")
    if engine is None:
        from p2pz.store.db import make_engine

        url = config.get_main_option("sqlalchemy.url")
        engine = make_engine(url) if url else engine_from_config(
            config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    # SQLite "batch" migrations recreate tables; foreign keys are off while they run and checked at the end
    with engine.connect() as connection, sqlite_foreign_keys_off(connection):
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          transaction_per_migration=False)
        with context.begin_transaction():
            context.run_migrations()
            bad = foreign_key_violations(connection)
            if bad:
                raise RuntimeError(f"migration left {bad} rows with broken foreign keys")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
