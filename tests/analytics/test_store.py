"""Analytics mart writes with two currencies: anomalies on the mart's key as it is and as a currency-keyed
migration would make it, feedback's currency, one forecast generation per currency."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from backend.analytics import store
from backend.analytics.analyze import FORECAST_COLUMNS

pytestmark = pytest.mark.slow  # a fresh migrated database per test

DAY = date(2025, 6, 10)
LEVELS, METRICS = ["service"], ["actual"]


def _anomalies(*rows: tuple[str, float, float]) -> pd.DataFrame:
    """Storage anomalies on DAY, one per (currency, actual, severity)."""
    return pd.DataFrame(
        [
            {
                "level": "service",
                "member": "Storage",
                "metric": "actual",
                "currency": currency,
                "charge_date": DAY,
                "actual": actual,
                "expected": actual / 2,
                "lower_bound": actual / 3,
                "upper_bound": actual / 1.5,
                "impact": actual / 2,
                "severity": severity,
                "kind": "spike",
                "contributors": "[]",
                "status": "open",
                "feedback": None,
            }
            for currency, actual, severity in rows
        ]
    )


def _stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        sql = "SELECT currency, actual, status FROM mart.anomalies ORDER BY currency"
        return [(c, float(a), s) for c, a, s in conn.execute(sa.text(sql))]


def _write(engine, frame: pd.DataFrame, run_id: str) -> dict:
    return store.write_anomalies(engine, frame, since=DAY, run_id=run_id, levels=LEVELS, metrics=METRICS)


def test_two_currencies_on_one_key_keep_the_most_severe_until_the_key_has_currency(owner):
    found = _anomalies(("EUR", 200.0, 5.0), ("USD", 80.0, 9.0))
    stats = _write(owner, found, "r1")
    # mart.anomalies is unique on (level, dimension_value, metric, charge_date): one of the two fits, and it is
    # one currency's row as detected, never a sum of both.
    assert (stats["anomalies"], stats["anomalies_collapsed"]) == (1, 1)
    assert _stored(owner) == [("USD", 80.0, "open")]

    # The migration this needs (currency in uq_anomalies, same name): both are kept, re-runs stay idempotent
    # and a verdict survives.
    with owner.begin() as conn:
        conn.execute(sa.text("DELETE FROM mart.anomalies"))
        conn.execute(sa.text("ALTER TABLE mart.anomalies DROP CONSTRAINT uq_anomalies"))
        conn.execute(
            sa.text(
                "ALTER TABLE mart.anomalies ADD CONSTRAINT uq_anomalies"
                " UNIQUE (level, dimension_value, metric, currency, charge_date)"
            )
        )
    assert _write(owner, found, "r1")["anomalies_collapsed"] == 0
    assert _stored(owner) == [("EUR", 200.0, "open"), ("USD", 80.0, "open")]
    with owner.begin() as conn:
        conn.execute(sa.text("UPDATE mart.anomalies SET status = 'expected' WHERE currency = 'EUR'"))
    _write(owner, found, "r2")
    assert _stored(owner) == [("EUR", 200.0, "expected"), ("USD", 80.0, "open")]


def test_feedback_carries_the_currency_of_its_anomaly(owner):
    _write(owner, _anomalies(("EUR", 200.0, 5.0)), "r1")
    with owner.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mart.anomaly_feedback (anomaly_id, level, dimension_value, kind, verdict)"
                " SELECT anomaly_id, level, dimension_value, kind, 'expected' FROM mart.anomalies"
                " UNION ALL SELECT NULL, 'service', 'Storage', 'spike', 'expected'"
            )
        )
    feedback = store.read_feedback(owner).sort_values("feedback_id")
    assert feedback["marked_currency"].tolist() == ["EUR", None]


def test_each_currency_is_its_own_forecast_generation(owner):
    rows = []
    for currency, point in (("EUR", 100.0), ("USD", 7.0)):
        for level, member in (("total", ""), ("service", "Storage")):
            common = {"level": level, "member": member, "metric": "actual", "currency": currency}
            common |= {"method": "seasonal_mean", "backtest_error": 0.1}
            for i in (11, 12):
                day = date(2025, 6, i)
                rows.append(
                    common | {"row_type": "day", "forecast_date": day, "period_end": day, "actual_to_date": 0.0}
                )
                rows[-1] |= {"point": point, "lower_bound": point, "upper_bound": point}
            month = {"forecast_date": date(2025, 6, 1), "period_end": date(2025, 6, 30), "actual_to_date": 10 * point}
            rows.append(common | {"row_type": "month_end", "point": 30 * point} | month)
            rows[-1] |= {"lower_bound": 29 * point, "upper_bound": 31 * point}
    frame = pd.DataFrame(rows)[FORECAST_COLUMNS]
    for run in ("r1", "r2"):  # a second run appends (no primary key clash)
        stats = store.write_forecasts(owner, frame, run_id=run, interval_level=0.8, as_of=DAY)
        assert (stats["forecast_rows"], stats["forecast_totals"]) == (8, 4)
    with owner.connect() as conn:
        days = conn.execute(
            sa.text(
                "SELECT run_id, currency, count(DISTINCT generated_at), sum(point) FROM mart.forecasts"
                " WHERE scope_type = 'total' GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ).all()
        totals = conn.execute(
            sa.text(
                "SELECT currency, actual_to_date, point FROM mart.forecast_totals"
                " WHERE run_id = 'r2' AND scope_type = 'total' ORDER BY currency"
            )
        ).all()
        latest = conn.execute(
            sa.text(
                "SELECT DISTINCT currency FROM mart.forecasts WHERE scope_type = 'total'"
                " AND generated_at = (SELECT max(generated_at) FROM mart.forecasts WHERE scope_type = 'total')"
            )
        ).all()
    assert [tuple(r) for r in days] == [
        ("r1", "EUR", 1, 200),
        ("r1", "USD", 1, 14),
        ("r2", "EUR", 1, 200),
        ("r2", "USD", 1, 14),
    ]
    assert [(c, float(a), float(p)) for c, a, p in totals] == [("EUR", 1000.0, 3000.0), ("USD", 70.0, 210.0)]
    # A reader that takes a scope's latest generation without naming a currency gets one currency, not both.
    assert len(latest) == 1
