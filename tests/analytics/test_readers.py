"""Analytics readers on a real migrated Postgres: anomalies and their series and band, verdicts, month-end forecast,
budget burn against the gold rows it was loaded from, alert history, freshness; reads on the read-only role."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pandas as pd
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from backend.lake.delta import lake_from_settings
from backend.mart import analytics
from backend.mart.load import load_gold
from tests.auth.principals import EDITOR
from tests.mart import synthetic_gold

pytestmark = pytest.mark.slow  # a fresh migrated database per test

START = dt.date(2026, 1, 1)  # January + 10 days of February
AS_OF = dt.date(2026, 2, 10)


@pytest.fixture
def gold(mart_settings) -> pd.DataFrame:
    lake = lake_from_settings(mart_settings)
    daily = synthetic_gold.gold_cost_daily(start=START, days=41, rows_per_day=30, resources=60)
    synthetic_gold.write_gold(lake, daily)
    load_gold(mart_settings, lake, run_id="r1")
    frame = daily.to_pandas()
    frame["charge_date"] = pd.to_datetime(frame["charge_date"]).dt.date
    return frame


def _anomaly(conn, *, level: str, value: str, day: dt.date, severity: float, status: str = "open", **extra) -> int:
    row = {"expected": 100, "lower": 80, "upper": 120, "actual": 400, "contributors": "[]", **extra}
    return conn.execute(
        sa.text(
            "INSERT INTO mart.anomalies (level, dimension_value, metric, charge_date, expected, lower_bound,"
            " upper_bound, actual, impact, currency, severity, kind, method, contributors, status) VALUES"
            " (:level, :value, 'actual', :day, :expected, :lower, :upper, :actual, :actual - :expected, 'EUR',"
            " :severity, 'spike', 'robust_z', CAST(:contributors AS jsonb), :status) RETURNING anomaly_id"
        ),
        {"level": level, "value": value, "day": day, "severity": severity, "status": status, **row},
    ).scalar_one()


def test_anomalies_order_filter_and_contributors(owner, reader):
    contributors = [{"dimension": "resource", "value": "r7", "expected": 10, "actual": 300, "delta": 290}]
    with owner.begin() as conn:
        low = _anomaly(conn, level="service", value="Storage", day=AS_OF, severity=3.0)
        high = _anomaly(conn, level="total", value="", day=AS_OF, severity=9.0, contributors=json.dumps(contributors))
        old = _anomaly(conn, level="service", value="Storage", day=AS_OF - dt.timedelta(days=5), severity=4.0)
        done = _anomaly(conn, level="region", value="westeurope", day=AS_OF, severity=5.0, status="resolved")

    found = analytics.list_anomalies(reader, status="open")
    assert [a.anomaly_id for a in found] == [high, low, old]  # newest day first, most severe first
    assert found[0].contributors == contributors and found[1].contributors == []
    assert found[0].actual == Decimal("400") and found[0].severity == 9.0
    assert [a.anomaly_id for a in analytics.list_anomalies(reader, status=None)] == [high, done, low, old]
    assert [a.anomaly_id for a in analytics.list_anomalies(reader, status=None, since=AS_OF)] == [high, done, low]
    assert len(analytics.list_anomalies(reader, status=None, limit=2)) == 2
    with pytest.raises(ValueError, match="status"):
        analytics.list_anomalies(reader, status="closed")


def test_series_matches_gold_for_total_dimension_and_tag(reader, gold):
    start, end = dt.date(2026, 1, 20), dt.date(2026, 1, 31)
    window = gold[(gold.charge_date >= start) & (gold.charge_date <= end)]

    def expected(frame: pd.DataFrame) -> dict[dt.date, Decimal]:
        return {d: sum(g["actual_cost"], Decimal(0)) for d, g in frame.groupby("charge_date")}

    total = analytics.series(reader, level="total", value="", metric="actual", start=start, end=end)
    assert {p.day: p.cost for p in total} == expected(window)
    assert [p.day for p in total] == sorted(p.day for p in total)

    storage = analytics.series(reader, level="service", value="Storage", metric="actual", start=start, end=end)
    assert storage and {p.day: p.cost for p in storage} == expected(window[window.service_name == "Storage"])

    sub = window.subscription_id.iloc[0]
    by_sub = analytics.series(reader, level="subscription", value=sub, metric="actual", start=start, end=end)
    assert {p.day: p.cost for p in by_sub} == expected(window[window.subscription_id == sub])

    env = analytics.series(reader, level="tag:env", value="prod", metric="actual", start=start, end=end)
    assert env and all(p.cost > 0 for p in env)
    assert sum(p.cost for p in env) < sum(p.cost for p in total)

    assert analytics.series(reader, level="service", value="NoSuch", metric="actual", start=start, end=end) == []
    with pytest.raises(ValueError, match="unknown anomaly level"):
        analytics.series(reader, level="meter; DROP", value="x", metric="actual", start=start, end=end)


def test_band_and_verdict_round_trip(owner, reader):
    with owner.begin() as conn:
        first = _anomaly(conn, level="service", value="Storage", day=AS_OF - dt.timedelta(days=2), severity=3.0)
        second = _anomaly(conn, level="service", value="Storage", day=AS_OF, severity=6.0, actual=500)
        _anomaly(conn, level="service", value="Compute", day=AS_OF, severity=6.0)

    points = analytics.band(reader, level="service", value="Storage", metric="actual")
    assert [p.day for p in points] == [AS_OF - dt.timedelta(days=2), AS_OF]
    assert points[1].actual == Decimal("500") and points[1].lower_bound == Decimal("80")

    analytics.set_anomaly_status(owner, second, actor=EDITOR, verdict="expected", note="load test", suppress_days=7)
    assert [a.anomaly_id for a in analytics.list_anomalies(reader, status="expected")] == [second]
    with owner.connect() as conn:
        fb = conn.execute(sa.text("SELECT verdict, note, created_by, suppress_until FROM mart.anomaly_feedback")).one()
    assert tuple(fb) == ("expected", "load test", EDITOR.email, AS_OF + dt.timedelta(days=7))
    analytics.set_anomaly_status(owner, second, actor=EDITOR, verdict="reopened")
    assert second in [a.anomaly_id for a in analytics.list_anomalies(reader, status="open")]
    assert first in [a.anomaly_id for a in analytics.list_anomalies(reader, status="open")]

    with pytest.raises(LookupError):
        analytics.set_anomaly_status(owner, 999_999, actor=EDITOR, verdict="expected")
    with pytest.raises(ValueError, match="verdict"):
        analytics.set_anomaly_status(owner, second, actor=EDITOR, verdict="ignore")


def test_month_end_forecast_latest_in_currency(owner, reader):
    insert = sa.text(
        "INSERT INTO mart.forecast_totals (scope_type, scope_value, metric, period, period_start, period_end,"
        " actual_to_date, point, lower_bound, upper_bound, interval_level, currency, method, as_of, generated_at)"
        " VALUES ('total', '', 'actual', 'month_end', :s, :e, 1000, :point, 900, 1300, 0.8, :cur, 'seasonal_median',"
        " :a, :g)"
    )
    feb = {"s": dt.date(2026, 2, 1), "e": dt.date(2026, 2, 28), "a": AS_OF}
    with owner.begin() as conn:
        conn.execute(insert, {**feb, "point": 1100, "cur": "EUR", "g": dt.datetime(2026, 2, 10, 1, tzinfo=dt.UTC)})
        conn.execute(insert, {**feb, "point": 1200, "cur": "EUR", "g": dt.datetime(2026, 2, 11, 1, tzinfo=dt.UTC)})
        conn.execute(insert, {**feb, "point": 7, "cur": "USD", "g": dt.datetime(2026, 2, 12, 1, tzinfo=dt.UTC)})

    fc = analytics.month_end_forecast(reader, as_of=AS_OF, currency="EUR")
    assert fc is not None and fc.point == Decimal("1200") and fc.currency == "EUR"
    assert (fc.lower, fc.upper, fc.interval_level) == (Decimal("900"), Decimal("1300"), 0.8)
    assert analytics.month_end_forecast(reader, as_of=AS_OF, currency="USD").point == Decimal("7")
    assert analytics.month_end_forecast(reader, as_of=AS_OF, currency="GBP") is None
    assert analytics.month_end_forecast(reader, as_of=dt.date(2026, 3, 1), currency="EUR") is None
    assert analytics.month_end_forecast(reader, as_of=AS_OF, metric="amortized", currency="EUR") is None


def test_budget_burn_matches_gold_per_scope(reader, gold):
    feb = gold[gold.charge_date >= dt.date(2026, 2, 1)]
    budget = {"period": "monthly", "currency": "EUR", "scope_type": "total", "scope_value": "", "metric": "actual"}

    burn = analytics.budget_burn(reader, budget, as_of=AS_OF)
    assert [p.day for p in burn] == sorted(feb.charge_date.unique())
    assert sum(p.cost for p in burn) == sum(feb["actual_cost"], Decimal(0))

    storage = analytics.budget_burn(reader, {**budget, "scope_type": "service", "scope_value": "Storage"}, as_of=AS_OF)
    assert sum(p.cost for p in storage) == sum(feb[feb.service_name == "Storage"]["actual_cost"], Decimal(0))
    amortized = analytics.budget_burn(reader, {**budget, "metric": "amortized"}, as_of=AS_OF)
    assert sum(p.cost for p in amortized) == sum(feb["amortized_cost"], Decimal(0))
    # The period holding as_of only, and never past it.
    mid = analytics.budget_burn(reader, budget, as_of=dt.date(2026, 2, 5))
    assert [p.day for p in mid] == [dt.date(2026, 2, d) for d in range(1, 6)]
    assert analytics.budget_burn(reader, {**budget, "currency": "USD"}, as_of=AS_OF) == []
    tagged = analytics.budget_burn(
        reader, {**budget, "scope_type": "tag", "tag_key": "env", "scope_value": "prod"}, as_of=AS_OF
    )
    assert tagged and sum(p.cost for p in tagged) < sum(p.cost for p in burn)
    with pytest.raises(ValueError, match="scope"):
        analytics.budget_burn(reader, {**budget, "scope_type": "planet"}, as_of=AS_OF)


def test_budget_alerts_and_freshness(owner, reader):
    assert analytics.budget_alerts(reader) == []
    assert {f.area: f.written_at for f in analytics.freshness(reader)} == dict.fromkeys(
        ["anomalies", "forecasts", "month-end forecasts", "budget alerts"]
    )
    with owner.begin() as conn:
        for pct, at in ((50, "2026-02-03T00:00:00Z"), (80, "2026-02-08T00:00:00Z")):
            conn.execute(
                sa.text(
                    "INSERT INTO mart.budget_alerts (budget_name, period_start, threshold_type, threshold_pct,"
                    " amount_at_alert, budget_amount, currency, triggered_at, webhook_status)"
                    " VALUES ('Platform', '2026-02-01', 'actual', :p, :amt, 1000, 'EUR', :at, 'none')"
                ),
                {"p": pct, "amt": pct * 10, "at": at},
            )
        _anomaly(conn, level="total", value="", day=AS_OF, severity=5.0)
    alerts = analytics.budget_alerts(reader)
    assert [(a.threshold_pct, a.amount_at_alert) for a in alerts] == [(80.0, Decimal("800")), (50.0, Decimal("500"))]
    assert len(analytics.budget_alerts(reader, limit=1)) == 1
    with pytest.raises(ValueError, match="limit"):
        analytics.budget_alerts(reader, limit=0)
    fresh = {f.area: f for f in analytics.freshness(reader)}
    assert fresh["anomalies"].latest == AS_OF and fresh["anomalies"].written_at is not None
    assert fresh["budget alerts"].latest == dt.date(2026, 2, 1)
    assert fresh["forecasts"].latest is None


@pytest.fixture
def two_currency_gold(mart_settings) -> pd.DataFrame:
    """The readers' estate with its first subscription billed in USD, the others in EUR (the same services,
    resource groups and tags have cost in both), loaded into the mart."""
    lake = lake_from_settings(mart_settings)
    # Three subscriptions: with the generator's four, each service would live in one subscription only.
    daily = synthetic_gold.gold_cost_daily(start=START, days=41, rows_per_day=30, resources=60, subscriptions=3)
    usd = pc.equal(daily["subscription_id"], daily["subscription_id"][0])
    currency = pc.if_else(usd, "USD", "EUR")
    daily = daily.set_column(daily.schema.get_field_index("billing_currency"), "billing_currency", currency)
    synthetic_gold.write_gold(lake, daily)
    load_gold(mart_settings, lake, run_id="r1")
    frame = daily.to_pandas()
    frame["charge_date"] = pd.to_datetime(frame["charge_date"]).dt.date
    tags = synthetic_gold.gold_resource_tags(daily).to_pandas()
    frame["env"] = frame["resource_id"].map(tags[tags.tag_key == "env"].set_index("resource_id")["tag_value"])
    return frame


def test_series_and_band_are_one_currency_never_a_sum(owner, reader, two_currency_gold):
    gold = two_currency_gold
    start, end = dt.date(2026, 1, 20), dt.date(2026, 1, 31)
    window = gold[(gold.charge_date >= start) & (gold.charge_date <= end)]
    assert set(window.billing_currency) == {"EUR", "USD"}

    def expected(frame: pd.DataFrame) -> dict[dt.date, Decimal]:
        return {d: sum(g["actual_cost"], Decimal(0)) for d, g in frame.groupby("charge_date")}

    for level, value, rows in (
        ("total", "", window),
        ("service", "Storage", window[window.service_name == "Storage"]),
        ("resource_group", "rg-app-00", window[window.resource_group == "rg-app-00"]),
    ):
        assert set(rows.billing_currency) == {"EUR", "USD"}, level  # the member has cost in both
        for cur in ("EUR", "USD"):
            got = analytics.series(
                reader, level=level, value=value, metric="actual", start=start, end=end, currency=cur
            )
            assert {p.day: p.cost for p in got} == expected(rows[rows.billing_currency == cur]), (level, cur)
        with pytest.raises(ValueError, match=r"2 currencies \(EUR, USD\): pass currency="):
            analytics.series(reader, level=level, value=value, metric="actual", start=start, end=end)
    eur = analytics.series(reader, level="tag:env", value="prod", metric="actual", start=start, end=end, currency="EUR")
    usd = analytics.series(reader, level="tag:env", value="prod", metric="actual", start=start, end=end, currency="USD")
    prod = window[window.env == "prod"]
    assert sum(p.cost for p in eur) + sum(p.cost for p in usd) == sum(prod["actual_cost"], Decimal(0))
    assert sum(p.cost for p in usd) == sum(prod[prod.billing_currency == "USD"]["actual_cost"], Decimal(0))
    # A member with one currency needs none named.
    sub = window[window.billing_currency == "USD"].subscription_id.iloc[0]
    assert analytics.series(reader, level="subscription", value=sub, metric="actual", start=start, end=end)

    with owner.begin() as conn:
        _anomaly(conn, level="service", value="Storage", day=AS_OF, severity=3.0)  # EUR
        conn.execute(sa.text("UPDATE mart.anomalies SET currency = 'USD'"))
        _anomaly(conn, level="service", value="Storage", day=AS_OF - dt.timedelta(days=1), severity=3.0)  # EUR
    assert [
        p.day for p in analytics.band(reader, level="service", value="Storage", metric="actual", currency="USD")
    ] == [AS_OF]
    assert len(analytics.band(reader, level="service", value="Storage", metric="actual")) == 2

    burn = {
        cur: analytics.budget_burn(
            reader,
            {
                "period": "monthly",
                "currency": cur,
                "scope_type": "service",
                "scope_value": "Storage",
                "metric": "actual",
            },
            as_of=AS_OF,
        )
        for cur in ("EUR", "USD")
    }
    feb = gold[(gold.charge_date >= dt.date(2026, 2, 1)) & (gold.service_name == "Storage")]
    for cur, points in burn.items():
        assert sum(p.cost for p in points) == sum(feb[feb.billing_currency == cur]["actual_cost"], Decimal(0))


def test_month_end_forecast_never_takes_a_row_that_summed_currencies(owner, reader):
    insert = sa.text(
        "INSERT INTO mart.forecast_totals (scope_type, scope_value, metric, period, period_start, period_end,"
        " actual_to_date, point, interval_level, currency, method, as_of, generated_at)"
        " VALUES ('total', '', 'actual', 'month_end', '2026-02-01', '2026-02-28', 1, :point, 0.8, :cur, 'm',"
        " :a, :g)"
    )
    with owner.begin() as conn:
        conn.execute(insert, {"point": 10, "cur": "EUR", "a": AS_OF, "g": dt.datetime(2026, 2, 10, tzinfo=dt.UTC)})
        # Written before forecasts were per currency: EUR and USD added up (0011 filed it under "", an unknown
        # currency). Newer, but never EUR's figure.
        conn.execute(insert, {"point": 99, "cur": "", "a": AS_OF, "g": dt.datetime(2026, 2, 11, tzinfo=dt.UTC)})
    assert analytics.month_end_forecast(reader, as_of=AS_OF, currency="EUR").point == Decimal("10")
    assert analytics.month_end_forecast(reader, as_of=AS_OF, currency="USD") is None
