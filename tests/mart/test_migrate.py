"""Migrations apply to an empty database and are a no-op when re-run."""

from __future__ import annotations

import sqlalchemy as sa

from backend.mart.migrate import current_revision, upgrade


def test_upgrade_twice_is_a_noop(pg_url):
    upgrade(pg_url)
    first = current_revision(pg_url)
    upgrade(pg_url)
    assert current_revision(pg_url) == first is not None
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names(schema="ops"))
    engine.dispose()
    assert {"source_cursors", "source_batches"} <= tables
