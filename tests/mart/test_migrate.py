"""Migrations apply to an empty database and are a no-op when re-run."""

from __future__ import annotations

import datetime as dt

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


def test_0006_backfills_the_resource_aggregate_from_an_existing_fact(pg_url, tmp_path):
    from alembic import command

    from backend.lake.delta import Lake
    from backend.lake.storage import LakeLocation
    from backend.mart import testing
    from backend.mart.load import load_gold
    from backend.mart.migrate import alembic_config

    upgrade(pg_url)
    lake = Lake(LakeLocation(uri=str(tmp_path / "lake")))
    testing.write_gold(lake, testing.gold_cost_daily(start=dt.date(2026, 1, 28), days=6, rows_per_day=30))
    load_gold(pg_url, lake, run_id="r1")
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    query = sa.text(
        "SELECT charge_month, resource_key, meter_key, sum(actual_cost), sum(fact_rows) "
        "FROM mart.agg_cost_resource_monthly GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    with engine.connect() as conn:
        loaded = conn.execute(query).all()
    command.downgrade(alembic_config(pg_url), "0005_analytics")
    with engine.connect() as conn:
        assert "agg_cost_resource_monthly" not in sa.inspect(conn).get_table_names(schema="mart")
        assert "ix_fact_cost_daily_resource" in {
            i["name"] for i in sa.inspect(conn).get_indexes("fact_cost_daily", "mart")
        }
    upgrade(pg_url)
    with engine.connect() as conn:
        assert conn.execute(query).all() == loaded and len(loaded) > 0
    engine.dispose()


def test_0008_rewrites_subscription_budgets_to_the_silver_form(pg_url):
    from tests.medallion.test_subscription_ids import ARM, CASES

    raws = [raw for raw, _ in CASES if raw is not None]
    upgrade(pg_url, "0007_stage_progress")
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    insert = sa.text(
        "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period)"
        " VALUES (:n, :t, :v, 100, 'EUR', 'monthly')"
    )
    with engine.begin() as conn:
        conn.execute(insert, [{"n": f"sub {i}", "t": "subscription", "v": raw} for i, raw in enumerate(raws)])
        # Another scope's value is not a subscription, whatever it looks like.
        conn.execute(insert, {"n": "rg", "t": "resource_group", "v": ARM.upper()})
    upgrade(pg_url)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT name, scope_value FROM mart.budgets")).all())
    engine.dispose()
    # The same rule as silver and the Python normaliser; a value that is no subscription id stays as stored.
    expected = {f"sub {i}": ARM if dict(CASES)[raw] == ARM else raw for i, raw in enumerate(raws)}
    assert got == expected | {"rg": ARM.upper()}
