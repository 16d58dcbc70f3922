"""Alembic environment: runs migrations online against the URL the caller configured (no alembic.ini)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from backend.mart import locks

config = context.config


def run_migrations_online() -> None:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    # One advisory lock: two app processes starting together never migrate concurrently.
    with engine.connect() as connection, locks.held(connection, locks.MIGRATE):
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    engine.dispose()


run_migrations_online()
