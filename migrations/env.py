"""Alembic environment: runs revisions on the connection or engine handed over by
:func:`migrations.alembic_config`, or on ``sqlalchemy.url`` when run from the ``alembic`` command line."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from store.models import Base

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
        from store.db import make_engine

        url = config.get_main_option("sqlalchemy.url")
        engine = make_engine(url) if url else engine_from_config(
            config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite "batch" migrations recreate tables (copy, DROP, RENAME); with foreign keys on, the DROP would
            # cascade into child tables. Switch them off for the migration (it must happen outside a transaction,
            # so on the raw connection), check integrity at the end, and switch them back on.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                              transaction_per_migration=False)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    bad = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise RuntimeError(f"migration left {len(bad)} rows with broken foreign keys: {bad[:3]}")
        finally:
            if sqlite:
                if connection.in_transaction():
                    connection.commit()
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
