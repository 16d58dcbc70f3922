"""run_analytics end to end: a tiny gold cost_daily in a local lake -> Spark -> anomalies and forecasts in the mart."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from backend.analytics.run import run_analytics
from backend.lake import lake_from_settings
from backend.lake.catalog import GOLD_COST_DAILY, MONEY
from backend.lake.storage import ensure_lake, lake_location
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from tests.auth.principals import EDITOR
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


# (subscription, currency, service, resource, daily level)
ONE_CURRENCY = (
    ("/subscriptions/s1", "USD", "Storage", "st-1", 40.0),
    ("/subscriptions/s1", "USD", "Storage", "st-2", 60.0),
    ("/subscriptions/s1", "USD", "Functions", "fn-1", 80.0),
)
# Two subscriptions billed in two currencies that share the service names and the resource group name, so every
# level has members with cost in both: a USD one and a EUR one.
TWO_CURRENCIES = (
    ("/subscriptions/s-usd", "USD", "Storage", "st-u1", 50.0),
    ("/subscriptions/s-usd", "USD", "Functions", "fn-u1", 70.0),
    ("/subscriptions/s-eur", "EUR", "Storage", "st-e1", 40.0),
    ("/subscriptions/s-eur", "EUR", "Storage", "st-e2", 60.0),
    ("/subscriptions/s-eur", "EUR", "Functions", "fn-e1", 30.0),
)


def gold_rows(days: int = 84, resources=ONE_CURRENCY, spike: str = "st-2") -> pa.Table:
    rng = np.random.default_rng(5)
    start = date(2025, 3, 1)
    rows = []
    for i in range(days):
        day = start + timedelta(days=i)
        for subscription, currency, service, resource, level in resources:
            cost = level * float(np.exp(0.03 * rng.standard_normal()))
            if resource == spike and i == days - 1:
                cost += 100.0  # the spike on the last day, caused by one resource
            rows.append(
                {
                    "charge_date": day,
                    "subscription_id": subscription,
                    "resource_group": "rg-a",
                    "service_name": service,
                    "resource_id": resource,
                    "meter_name": f"{resource}-meter",
                    "billing_currency": currency,
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


@pytest.fixture
def analytics_env(spark, pg_url, tmp_path):
    """A migrated mart, a local lake and the settings run_analytics needs; the test writes gold."""
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        lake_uri=str(tmp_path / "lake"),
        anomaly_levels="service,resource_group",
        anomaly_metrics="actual",
    )
    ensure_lake(lake_location(settings))
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    yield settings, lake_from_settings(settings), engine
    engine.dispose()


def test_run_analytics_writes_anomalies_and_forecasts(spark, analytics_env):
    settings, lake, engine = analytics_env
    lake.overwrite(GOLD_COST_DAILY.name, gold_rows())
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
            found[0].contributors if not isinstance(found[0].contributors, str) else json.loads(found[0].contributors)
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


def test_a_metric_no_report_covers_gets_no_anomalies_and_no_forecast(spark, analytics_env):
    """An actual-only estate (only ActualCost exports: amortized null on every gold row): actual is analysed as
    usual, amortized has no anomalies and no forecasts (not a series of zeros), and the step says so."""
    settings, lake, engine = analytics_env
    settings = settings.model_copy(update={"anomaly_metrics": ["actual", "amortized"]})
    gold = gold_rows()
    gold = gold.set_column(gold.schema.get_field_index("amortized_cost"), "amortized_cost", pa.nulls(len(gold), MONEY))
    lake.overwrite(GOLD_COST_DAILY.name, gold)
    stats = run_analytics(settings, lake, spark, engine, run_id="run-1")
    # total + 2 services + 1 resource group, per metric; every amortized one is skipped
    assert (stats["series"], stats["series_not_available"]) == (8, 4)
    assert stats["metrics_not_available"] == ["amortized"]
    with engine.connect() as conn:
        anomalies = conn.execute(sa.text("SELECT metric, level, dimension_value FROM mart.anomalies")).all()
        forecasts = dict(conn.execute(sa.text("SELECT metric, count(*) FROM mart.forecasts GROUP BY 1")).all())
        totals = dict(conn.execute(sa.text("SELECT metric, count(*) FROM mart.forecast_totals GROUP BY 1")).all())
    assert ("actual", "service", "Storage") in {tuple(a) for a in anomalies}
    assert {a.metric for a in anomalies} == {"actual"}
    assert set(forecasts) == set(totals) == {"actual"}
    assert forecasts["actual"] == 4 * settings.forecast_horizon_days


def test_days_a_metric_is_not_available_are_not_zero_cost(spark, analytics_env):
    """Amortized cost missing on a few days in the middle (only an ActualCost export covered them): no anomaly on
    or after those days from reading them as zeros, and the forecast learns from the days after them."""
    settings, lake, engine = analytics_env
    settings = settings.model_copy(update={"anomaly_metrics": ["amortized"], "anomaly_lookback_days": 84})
    gold = gold_rows(spike="none")
    gap = pc.and_(
        pc.greater_equal(gold["charge_date"], pa.scalar(date(2025, 4, 20))),
        pc.less_equal(gold["charge_date"], pa.scalar(date(2025, 4, 22))),
    )
    amortized = pc.if_else(gap, pa.scalar(None, MONEY), gold["amortized_cost"])
    gold = gold.set_column(gold.schema.get_field_index("amortized_cost"), "amortized_cost", amortized)
    lake.overwrite(GOLD_COST_DAILY.name, gold)
    stats = run_analytics(settings, lake, spark, engine, run_id="run-1")
    assert (stats["series_not_available"], stats["metrics_not_available"]) == (0, [])
    with engine.connect() as conn:
        anomalies = conn.execute(sa.text("SELECT level, dimension_value, charge_date FROM mart.anomalies")).all()
        forecasts = conn.execute(
            sa.text("SELECT scope_type, count(*) FROM mart.forecasts WHERE metric = 'amortized' GROUP BY 1")
        ).all()
    # Read as zeros, the three days would be drops and the days after them a spike back up.
    assert anomalies == []
    assert dict(forecasts) == {
        "total": settings.forecast_horizon_days,
        "service": 2 * settings.forecast_horizon_days,
        "resource_group": settings.forecast_horizon_days,
    }


def _gold_sums(table: pa.Table, column: str | None, start: date) -> dict[tuple[str, str], float]:
    """Gold's actual cost from `start` on per (member of `column`, currency); column None: the estate total."""
    frame = table.to_pandas()
    frame = frame[frame["charge_date"] >= start]
    members = frame[column] if column else ""
    sums = frame.assign(member=members, cost=frame["actual_cost"].astype(float)).groupby(
        ["member", "billing_currency"]
    )["cost"]
    return {key: float(v) for key, v in sums.sum().items()}


def test_two_currencies_are_never_added(spark, analytics_env):
    """USD and EUR subscriptions with the same service and resource group names: every anomaly, forecast and
    month-end total is one currency's, the EUR spike is found in EUR with EUR contributors only."""
    settings, lake, engine = analytics_env
    gold = gold_rows(resources=TWO_CURRENCIES, spike="st-e2")
    lake.overwrite(GOLD_COST_DAILY.name, gold)
    stats = run_analytics(settings, lake, spark, engine, run_id="run-1")
    assert stats["currencies"] == 2
    # total + 2 services + 1 resource group, each in 2 currencies
    assert stats["series"] == 8
    last = date(2025, 3, 1) + timedelta(days=83)
    with engine.connect() as conn:
        anomalies = conn.execute(
            sa.text("SELECT level, dimension_value, currency, actual, contributors FROM mart.anomalies ORDER BY level")
        ).all()
        totals = conn.execute(
            sa.text(
                "SELECT scope_type, scope_value, currency, actual_to_date, generated_at FROM mart.forecast_totals"
                " WHERE period = 'month_end'"
            )
        ).all()
        days = conn.execute(
            sa.text(
                "SELECT scope_type, scope_value, currency, count(*) AS n, count(DISTINCT generated_at) AS gens"
                " FROM mart.forecasts GROUP BY 1, 2, 3"
            )
        ).all()

    # The spike is in EUR: found there, with EUR's actual (USD's Storage cost is not in it), and explained by
    # EUR resources only.
    assert [(a.level, a.dimension_value, a.currency) for a in anomalies] == [
        ("resource_group", "rg-a", "EUR"),
        ("service", "Storage", "EUR"),
    ]
    eur_day = gold.filter(pc.and_(pc.equal(gold["charge_date"], last), pc.equal(gold["billing_currency"], "EUR")))
    eur_storage = eur_day.filter(pc.equal(eur_day["service_name"], "Storage"))
    service = next(a for a in anomalies if a.level == "service")
    assert float(service.actual) == pytest.approx(float(pc.sum(eur_storage["actual_cost"]).as_py()))
    for a in anomalies:
        contributors = a.contributors if not isinstance(a.contributors, str) else json.loads(a.contributors)
        assert contributors[0]["value"] == "st-e2"
        assert not {c["value"] for c in contributors} & {"st-u1", "fn-u1"}  # USD resources explain no EUR cost

    # Month-end totals: one per scope and currency, each equal to that currency's cost to date in gold.
    month = last.replace(day=1)
    expected = {("total", "", c): v for (_, c), v in _gold_sums(gold, None, month).items()}
    for level, column in (("service", "service_name"), ("resource_group", "resource_group")):
        expected |= {(level, m, c): v for (m, c), v in _gold_sums(gold, column, month).items()}
    got = {(t.scope_type, t.scope_value, t.currency): float(t.actual_to_date) for t in totals}
    assert got == pytest.approx(expected)
    assert {t.currency for t in totals if t.scope_type == "total"} == {"EUR", "USD"}

    # Daily forecasts: the full horizon per scope and currency, one generation for the run (the keys hold the
    # currency, so the two currencies' rows of a scope and day are two rows, not a clash or a sum).
    assert {(d.scope_type, d.scope_value, d.currency) for d in days} == set(expected)
    assert {(d.n, d.gens) for d in days} == {(settings.forecast_horizon_days, 1)}
    assert len({t.generated_at for t in totals}) == 1

    # Again: the forecasts append a new generation (no key clash), anomalies stay as they are.
    run_analytics(settings, lake, spark, engine, run_id="run-2")
    with engine.connect() as conn:
        per_currency = conn.execute(
            sa.text(
                "SELECT currency, count(DISTINCT generated_at) FROM mart.forecasts WHERE scope_type = 'total'"
                " GROUP BY 1 ORDER BY 1"
            )
        ).all()
        again = conn.execute(sa.text("SELECT level, currency FROM mart.anomalies ORDER BY level")).all()
    assert [tuple(r) for r in per_currency] == [("EUR", 2), ("USD", 2)]
    assert [tuple(r) for r in again] == [("resource_group", "EUR"), ("service", "EUR")]


def test_two_currency_mart_end_to_end(spark, mart_settings, owner, reader):
    """The mart's synthetic estate with one subscription in USD and two in EUR, a spike in one EUR resource:
    load, analytics, budgets. Every anomaly's actual is its currency's series in the mart, month-end totals are
    per currency, and each budget's alerts use its own currency's spend and forecast."""
    from backend.analytics.budgets import create_budget, evaluate_budgets
    from backend.mart import analytics
    from backend.mart.load import load_gold
    from tests.mart import synthetic_gold

    start, days = date(2026, 1, 1), 70
    as_of = start + timedelta(days=days - 1)
    daily = synthetic_gold.gold_cost_daily(start=start, days=days, rows_per_day=40, resources=60, subscriptions=3)
    frame = daily.to_pandas()
    frame["billing_currency"] = np.where(frame["subscription_id"] == frame["subscription_id"].iloc[0], "USD", "EUR")
    eur = frame[frame["billing_currency"] == "EUR"]["resource_id"].iloc[0]
    spike = (frame["charge_date"] == as_of) & (frame["resource_id"] == eur)
    frame.loc[spike, ["actual_cost", "amortized_cost"]] = frame.loc[spike, "actual_cost"].map(lambda c: c + 5000)
    daily = pa.Table.from_pandas(frame, schema=daily.schema, preserve_index=False)
    lake = lake_from_settings(mart_settings)
    synthetic_gold.write_gold(lake, daily)
    load_gold(mart_settings, lake, run_id="r1")
    create_budget(owner, actor=EDITOR, name="usd", scope_type="total", amount=1, currency="USD", period="monthly")
    create_budget(owner, actor=EDITOR, name="eur", scope_type="total", amount=1, currency="EUR", period="monthly")

    stats = run_analytics(mart_settings, lake, spark, owner, run_id="r1")  # every default level and metric
    evaluate_budgets(owner, run_id="r1", as_of=as_of)

    found = analytics.list_anomalies(reader, status=None)
    assert any(a.currency == "EUR" and a.charge_date == as_of for a in found) and stats["currencies"] == 2
    for a in found:
        assert a.currency in ("EUR", "USD")
        day = analytics.series(
            reader, level=a.level, value=a.dimension_value, metric=a.metric, start=a.charge_date,
            end=a.charge_date, currency=a.currency,
        )  # fmt: skip
        assert [p.cost for p in day] == [pytest.approx(a.actual)], a

    month = as_of.replace(day=1)
    with owner.connect() as conn:
        spent = dict(
            conn.execute(
                sa.text(
                    "SELECT c.currency_code, sum(a.actual_cost) FROM mart.agg_cost_daily a JOIN mart.dim_currency c"
                    " USING (currency_key) WHERE a.charge_date >= :m GROUP BY 1"
                ),
                {"m": month},
            ).all()
        )
        rest = dict(
            conn.execute(
                sa.text(
                    "SELECT currency, sum(point) FROM mart.forecasts WHERE scope_type = 'total' AND metric = 'actual'"
                    " AND forecast_date > :d AND forecast_date < :next GROUP BY 1"
                ),
                {"d": as_of, "next": date(2026, 4, 1)},
            ).all()
        )
        alerts = {
            (r.currency, r.threshold_type): r.amount_at_alert
            for r in conn.execute(sa.text("SELECT currency, threshold_type, amount_at_alert FROM mart.budget_alerts"))
        }
    assert set(spent) == set(rest) == {"EUR", "USD"}
    for cur in ("EUR", "USD"):
        fc = analytics.month_end_forecast(reader, as_of=as_of, currency=cur)
        assert fc is not None and fc.currency == cur and fc.actual_to_date == pytest.approx(spent[cur])
        assert alerts[(cur, "actual")] == pytest.approx(spent[cur])
        assert float(alerts[(cur, "forecast")]) == pytest.approx(float(spent[cur] + rest[cur]))


def test_detector_defaults_are_the_settings_defaults():
    # The evaluation scores DetectorParams(); the app runs what Settings holds: both must be the evaluated values.
    from backend.analytics.detect import DetectorParams
    from backend.analytics.run import detector_params
    from backend.config import Settings

    assert detector_params(Settings(_env_file=None)) == DetectorParams()


def test_a_level_setting_takes_effect_on_the_next_run(spark, analytics_env):
    """The spike (+100 on Storage's last day) is an anomaly at both levels; a minimum impact of 500 set for the
    service level on the Anomalies page drops it there at the next run, and the resource group keeps its own."""
    from backend.analytics import anomaly_settings

    settings, lake, engine = analytics_env
    lake.overwrite(GOLD_COST_DAILY.name, gold_rows())
    last = date(2025, 3, 1) + timedelta(days=83)

    def found() -> set[str]:
        with engine.connect() as conn:
            return set(
                conn.execute(sa.text("SELECT level FROM mart.anomalies WHERE charge_date = :d"), {"d": last}).scalars()
            )

    run_analytics(settings, lake, spark, engine, run_id="run-1")
    assert found() == {"service", "resource_group"}
    anomaly_settings.save(engine, "service", actor=EDITOR, min_cost_impact=500)
    stats = run_analytics(settings, lake, spark, engine, run_id="run-2")
    assert stats["days_reconfigured"] > 0  # the new settings rescore the history once
    assert found() == {"resource_group"}
    anomaly_settings.reset(engine, "service", actor=EDITOR)
    run_analytics(settings, lake, spark, engine, run_id="run-3")
    assert found() == {"service", "resource_group"}
