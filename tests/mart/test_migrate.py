"""Migrations apply to an empty database and are a no-op when re-run."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from backend.mart.db import owner_engine
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
    engine = owner_engine(pg_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names(schema="ops"))
    engine.dispose()
    assert {"source_cursors", "source_batches"} <= tables


def test_upgrade_an_existing_database_keeps_its_data(pg_url):
    upgrade(pg_url, "0002_pipeline_runs")
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
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
    from backend.mart.load import load_gold
    from backend.mart.migrate import alembic_config
    from tests.mart import synthetic_gold

    upgrade(pg_url)
    lake = Lake(LakeLocation(uri=str(tmp_path / "lake")))
    synthetic_gold.write_gold(lake, synthetic_gold.gold_cost_daily(start=dt.date(2026, 1, 28), days=6, rows_per_day=30))
    load_gold(pg_url, lake, run_id="r1")
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
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
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
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


def test_0009_rewrites_subscription_level_analytics_and_merges_split_rows(pg_url):
    import pandas as pd

    from backend.analytics.analyze import suppressed_by_feedback
    from backend.mart.analytics_store import read_feedback
    from tests.medallion.test_subscription_ids import ARM, CASES, GUID

    raws = [raw for raw, _ in CASES if raw is not None]
    canonical = {raw: ARM if expected == ARM else raw for raw, expected in CASES if raw is not None}
    day0 = dt.date(2026, 1, 1)
    upgrade(pg_url, "0008_budget_subscription_ids")
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    anomaly = sa.text(
        "INSERT INTO mart.anomalies (level, dimension_value, charge_date, actual, impact, kind, status, feedback)"
        " VALUES (:l, :v, :d, 100, :i, 'spike', :s, :f) RETURNING anomaly_id"
    )
    feedback = sa.text(
        "INSERT INTO mart.anomaly_feedback (anomaly_id, level, dimension_value, kind, verdict)"
        " VALUES (:a, 'subscription', :v, 'spike', 'expected') RETURNING feedback_id"
    )
    forecast = sa.text(
        "INSERT INTO mart.forecasts (scope_type, scope_value, forecast_date, point, method, generated_at)"
        " VALUES (:t, :v, :d, :p, 'ets', :g)"
    )
    total = sa.text(
        "INSERT INTO mart.forecast_totals (scope_type, scope_value, metric, period, period_start, period_end,"
        " actual_to_date, point, method, as_of, generated_at)"
        " VALUES ('subscription', :v, 'actual', 'month_end', '2026-02-01', '2026-02-28', 0, :p, 'ets',"
        " '2026-02-10', :g)"
    )
    gen1, gen2 = dt.datetime(2026, 2, 10, tzinfo=dt.UTC), dt.datetime(2026, 2, 11, tzinfo=dt.UTC)
    split_day, judged_day = day0 + dt.timedelta(days=100), day0 + dt.timedelta(days=101)

    def add(conn, value, day, status="open", note=None, level="subscription"):
        row = {"l": level, "v": value, "d": day, "i": 60, "s": status, "f": note}
        return conn.execute(anomaly, row).scalar_one()

    with engine.begin() as conn:
        for i, raw in enumerate(raws):
            add(conn, raw, day0 + dt.timedelta(days=i))
            conn.execute(feedback, {"a": None, "v": raw})
        add(conn, GUID.upper(), day0, level="resource_group")  # another level's member is no subscription
        # One subscription split over two spellings (two sources): the bare row was judged, the ARM one open.
        bare = add(conn, GUID.upper(), split_day, status="expected", note="month-end batch")
        arm = add(conn, ARM, split_day)
        marked = conn.execute(feedback, {"a": bare, "v": GUID.upper()}).scalar_one()
        # Both judged: the row already in the canonical form keeps its own verdict.
        add(conn, GUID, judged_day, status="expected", note="bare")
        kept = add(conn, ARM, judged_day, status="resolved", note="arm")
        for value, point in ((GUID, 1.0), (ARM, 2.0), ("Production", 3.0)):
            conn.execute(forecast, {"t": "subscription", "v": value, "d": "2026-02-11", "p": point, "g": gen1})
            conn.execute(total, {"v": value, "p": point, "g": gen1})
        conn.execute(forecast, {"t": "subscription", "v": GUID.upper(), "d": "2026-02-12", "p": 4.0, "g": gen2})
        conn.execute(total, {"v": f"{{{GUID}}}", "p": 4.0, "g": gen2})
        conn.execute(forecast, {"t": "service", "v": GUID, "d": "2026-02-11", "p": 5.0, "g": gen1})

    upgrade(pg_url)
    assert current_revision(pg_url) == _head()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT anomaly_id, level, dimension_value, charge_date, status, feedback FROM mart.anomalies")
        ).all()
        feedback_rows = conn.execute(
            sa.text("SELECT feedback_id, anomaly_id, dimension_value FROM mart.anomaly_feedback")
        )
        feedback_by_id = {f.feedback_id: f for f in feedback_rows}
        forecasts = set(
            conn.execute(sa.text("SELECT scope_type, scope_value, forecast_date, point FROM mart.forecasts"))
        )
        totals = set(conn.execute(sa.text("SELECT scope_value, generated_at, point FROM mart.forecast_totals")))

    subscription_level = {r.charge_date: r for r in rows if r.level == "subscription"}
    assert len(subscription_level) == len(rows) - 1  # one row per day: the split pairs merged
    assert {r.dimension_value for r in rows if r.level == "resource_group"} == {GUID.upper()}
    assert [subscription_level[day0 + dt.timedelta(days=i)].dimension_value for i in range(len(raws))] == [
        canonical[raw] for raw in raws
    ]
    merged = subscription_level[split_day]
    assert (merged.anomaly_id, merged.dimension_value, merged.status, merged.feedback) == (
        arm,
        ARM,
        "expected",
        "month-end batch",
    )
    assert (subscription_level[judged_day].anomaly_id, subscription_level[judged_day].status) == (kept, "resolved")
    assert (feedback_by_id[marked].anomaly_id, feedback_by_id[marked].dimension_value) == (arm, ARM)
    assert sorted(f.dimension_value for f in feedback_by_id.values() if f.feedback_id != marked) == sorted(
        canonical[raw] for raw in raws
    )
    assert forecasts == {
        ("subscription", ARM, dt.date(2026, 2, 11), 2),
        ("subscription", "Production", dt.date(2026, 2, 11), 3),
        ("subscription", ARM, dt.date(2026, 2, 12), 4),
        ("service", GUID, dt.date(2026, 2, 11), 5),
    }
    assert {(v, p) for v, _, p in totals} == {(ARM, 2), ("Production", 3), (ARM, 4)} and len(totals) == 3

    # The point of it: the verdict given on the bare spelling suppresses the anomaly re-detected under silver's.
    redetected = pd.DataFrame(
        [{"level": "subscription", "member": ARM, "kind": "spike", "charge_date": split_day, "impact": 60.0}]
    )
    assert suppressed_by_feedback(redetected, read_feedback(engine), default_days=90).tolist() == [marked]
    engine.dispose()


def test_0011_keys_analytics_by_currency_and_downgrades(pg_url):
    from alembic import command

    from backend.mart.migrate import alembic_config

    upgrade(pg_url, "0010_one_metric")
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    day, gen = dt.date(2026, 2, 10), dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
    anomaly = sa.text(
        "INSERT INTO mart.anomalies (level, dimension_value, charge_date, actual, impact, currency, severity, kind,"
        " status) VALUES ('service', 'Storage', :d, 100, 50, :c, :s, 'spike', :st) RETURNING anomaly_id"
    )
    feedback = sa.text(
        "INSERT INTO mart.anomaly_feedback (anomaly_id, level, dimension_value, kind, verdict)"
        " VALUES (:a, 'service', 'Storage', 'spike', 'expected') RETURNING feedback_id"
    )
    forecast = sa.text(
        "INSERT INTO mart.forecasts (scope_type, scope_value, forecast_date, point, currency, method, generated_at)"
        " VALUES ('total', '', '2026-02-11', :p, :c, 'ets', :g)"
    )
    total = sa.text(
        "INSERT INTO mart.forecast_totals (scope_type, scope_value, metric, period, period_start, period_end,"
        " actual_to_date, point, currency, method, as_of, generated_at)"
        " VALUES ('total', '', 'actual', 'month_end', '2026-02-01', '2026-02-28', 0, :p, :c, 'ets', '2026-02-10', :g)"
    )
    with engine.begin() as conn:
        # From before analytics was per currency (no currency: it summed them), and one written per currency.
        legacy = conn.execute(anomaly, {"d": day, "c": None, "s": 3, "st": "expected"}).scalar_one()
        eur = conn.execute(anomaly, {"d": day + dt.timedelta(days=1), "c": "EUR", "s": 3, "st": "open"}).scalar_one()
        fb_legacy = conn.execute(feedback, {"a": legacy}).scalar_one()
        fb_eur = conn.execute(feedback, {"a": eur}).scalar_one()
        conn.execute(forecast, {"p": 9, "c": None, "g": gen - dt.timedelta(days=1)})
        conn.execute(total, {"p": 9, "c": None, "g": gen - dt.timedelta(days=1)})

    upgrade(pg_url)
    assert current_revision(pg_url) == _head()
    with engine.begin() as conn:
        fb = dict(conn.execute(sa.text("SELECT feedback_id, currency FROM mart.anomaly_feedback")).all())
        currencies = conn.execute(sa.text("SELECT anomaly_id, currency FROM mart.anomalies ORDER BY 1")).all()
        assert fb == {fb_legacy: None, fb_eur: "EUR"}  # a verdict on a summed row still covers every currency
        assert [tuple(r) for r in currencies] == [(legacy, ""), (eur, "EUR")]
        assert conn.execute(sa.text("SELECT currency FROM mart.forecasts")).scalar_one() == ""
        # Now two currencies fit on one member and day, and in one forecast generation.
        usd = conn.execute(anomaly, {"d": day + dt.timedelta(days=1), "c": "USD", "s": 8, "st": "open"}).scalar_one()
        conn.execute(feedback, {"a": usd})
        for cur, point in (("EUR", 1), ("USD", 2)):
            conn.execute(forecast, {"p": point, "c": cur, "g": gen})
            conn.execute(total, {"p": point, "c": cur, "g": gen})
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(forecast, {"p": 3, "c": None, "g": gen})
    with engine.connect() as conn:
        index = {i["name"]: i["column_names"] for i in sa.inspect(conn).get_indexes("forecasts", "mart")}
    assert index["ix_forecasts_latest"][:4] == ["scope_type", "scope_value", "metric", "currency"]

    command.downgrade(alembic_config(pg_url), "0010_one_metric")
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT anomaly_id, currency FROM mart.anomalies ORDER BY 1")).all()
        pointing = set(conn.execute(sa.text("SELECT anomaly_id FROM mart.anomaly_feedback")).scalars())
        gens = conn.execute(
            sa.text(
                "SELECT 'f', currency, generated_at FROM mart.forecasts WHERE generated_at >= :g"
                " UNION ALL SELECT 't', currency, generated_at FROM mart.forecast_totals WHERE generated_at >= :g"
                " ORDER BY 1, 2"
            ),
            {"g": gen},
        ).all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("anomaly_feedback", "mart")}
    # One row per old key: of EUR and USD on one day the more severe (nothing judged); feedback follows it.
    assert [tuple(r) for r in kept] == [(legacy, ""), (usd, "USD")]
    assert pointing == {legacy, usd} and "currency" not in columns
    # Each currency its own generation again, the same in both tables.
    assert [(t, c, g - gen) for t, c, g in gens] == [
        ("f", "EUR", dt.timedelta(0)),
        ("f", "USD", dt.timedelta(microseconds=1)),
        ("t", "EUR", dt.timedelta(0)),
        ("t", "USD", dt.timedelta(microseconds=1)),
    ]
    upgrade(pg_url)
    assert current_revision(pg_url) == _head()
    engine.dispose()
