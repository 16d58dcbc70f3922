"""run_analytics end to end: a tiny gold cost_daily in a local lake -> Spark -> anomalies and forecasts in the mart."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from backend.analytics.run import run_analytics
from backend.lake import lake_from_settings
from backend.lake.storage import ensure_lake, lake_location
from backend.mart.migrate import upgrade
from backend.medallion.schemas import GOLD_COST_DAILY, MONEY
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


def gold_rows(days: int = 84) -> pa.Table:
    rng = np.random.default_rng(5)
    start = date(2025, 3, 1)
    rows = []
    for i in range(days):
        day = start + timedelta(days=i)
        for service, resource, level in (
            ("Storage", "st-1", 40.0),
            ("Storage", "st-2", 60.0),
            ("Functions", "fn-1", 80.0),
        ):
            cost = level * float(np.exp(0.03 * rng.standard_normal()))
            if resource == "st-2" and i == days - 1:
                cost += 100.0  # the spike on the last day, caused by st-2
            rows.append(
                {
                    "charge_date": day,
                    "subscription_id": "/subscriptions/s1",
                    "resource_group": "rg-a",
                    "service_name": service,
                    "resource_id": resource,
                    "meter_name": f"{resource}-meter",
                    "billing_currency": "USD",
                    "actual_cost": round(cost, 6),
                    "amortized_cost": round(cost, 6),
                }
            )
    table = pa.Table.from_pylist(rows)
    for name in ("actual_cost", "amortized_cost"):
        table = table.set_column(
            table.schema.get_field_index(name), name, table[name].cast(pa.decimal128(28, 6)).cast(MONEY)
        )
    return table


def test_run_analytics_writes_anomalies_and_forecasts(spark, pg_url, tmp_path):
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        lake_uri=str(tmp_path / "lake"),
        anomaly_levels="service,resource_group",
        anomaly_metrics="actual",
    )
    ensure_lake(lake_location(settings))
    lake = lake_from_settings(settings)
    lake.overwrite(GOLD_COST_DAILY, gold_rows())
    upgrade(pg_url)
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        stats = run_analytics(settings, lake, spark, engine, run_id="run-1")
        assert stats["anomalies"] >= 1
        with engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT level, dimension_value, kind, contributors, actual, expected FROM mart.anomalies"
                    " WHERE level = 'service'"
                )
            ).all()
            assert [(r.dimension_value, r.kind) for r in found] == [("Storage", "spike")]
            contributors = (
                found[0].contributors
                if not isinstance(found[0].contributors, str)
                else json.loads(found[0].contributors)
            )
            assert contributors[0]["value"] == "st-2" and contributors[0]["meter"] == "st-2-meter"
            totals = conn.execute(
                sa.text(
                    "SELECT scope_type, period, point, lower_bound, upper_bound, method, backtest_error"
                    " FROM mart.forecast_totals WHERE scope_type = 'total' AND period = 'month_end'"
                )
            ).one()
            assert totals.lower_bound <= totals.point <= totals.upper_bound and totals.method
            days = conn.execute(sa.text("SELECT count(*) FROM mart.forecasts WHERE scope_type = 'total'")).scalar()
            assert days == settings.forecast_horizon_days
        # Re-running is idempotent for anomalies (upsert on the natural key); a user's verdict survives.
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE mart.anomalies SET status = 'expected'"))
        run_analytics(settings, lake, spark, engine, run_id="run-2")
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status FROM mart.anomalies WHERE level = 'service'")).all()
        assert [r.status for r in rows] == ["expected"]
    finally:
        engine.dispose()


def test_detector_defaults_are_the_settings_defaults():
    # The evaluation scores DetectorParams(); the app runs what Settings holds: both must be the evaluated values.
    from backend.analytics.detect import DetectorParams
    from backend.analytics.run import detector_params
    from backend.config import Settings

    assert detector_params(Settings(_env_file=None)) == DetectorParams()
