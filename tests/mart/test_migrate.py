"""Migrations apply to an empty database and are a no-op when re-run."""

from __future__ import annotations

import sqlalchemy as sa

from backend.mart.migrate import current_revision, upgrade


def _head() -> str:
    from alembic.script import ScriptDirectory

    from backend.mart.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()


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


def test_upgrade_an_existing_database_keeps_its_data(pg_url):
    upgrade(pg_url, "0002_pipeline_runs")
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at, reported_total)"
                " VALUES ('demo', 'sub-1', 'ActualCost', '2026-01-01', 'b1', now(), 12.5)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO ops.pipeline_runs (run_id, trigger, steps, status, started_at)"
                " VALUES ('r1', 'manual', '[]', 'succeeded', now())"
            )
        )
    upgrade(pg_url)
    assert current_revision(pg_url) == _head()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT reported_total FROM ops.source_cursors")).scalar() == 12.5
        assert conn.execute(sa.text("SELECT count(*) FROM ops.pipeline_runs")).scalar() == 1
        mart_tables = set(sa.inspect(conn).get_table_names(schema="mart"))
    engine.dispose()
    assert {"fact_cost_daily", "dim_resource", "anomalies", "forecasts", "budgets", "agent_audit"} <= mart_tables


def test_downgrade_to_0002_and_back(pg_url):
    upgrade(pg_url)
    from alembic import command

    from backend.mart.migrate import alembic_config

    command.downgrade(alembic_config(pg_url), "0002_pipeline_runs")
    assert current_revision(pg_url) == "0002_pipeline_runs"
    upgrade(pg_url)
    assert current_revision(pg_url) == _head()
