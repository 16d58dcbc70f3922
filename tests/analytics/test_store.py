"""Analytics mart writes with two currencies: anomalies per currency on uq_anomalies (which holds it since
0011), feedback's own currency, one forecast generation per run holding every currency."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from backend.analytics.analyze import FORECAST_COLUMNS
from backend.mart import analytics_store
from tests.auth.principals import EDITOR

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
    scored = {(c, DAY): "fp" for c in sorted(set(frame["currency"]))}
    return analytics_store.write_anomalies(
        engine, frame, scored=scored, config_fingerprint="cfg", run_id=run_id, levels=LEVELS, metrics=METRICS
    )


def test_two_currencies_on_one_member_and_day_are_two_anomalies(owner):
    found = _anomalies(("EUR", 200.0, 5.0), ("USD", 80.0, 9.0))
    assert _write(owner, found, "r1") == {"anomalies": 2, "anomalies_removed": 0}
    # Each is one currency's row as detected, never a sum of both; re-runs stay idempotent and a verdict survives.
    assert _stored(owner) == [("EUR", 200.0, "open"), ("USD", 80.0, "open")]
    with owner.begin() as conn:
        conn.execute(sa.text("UPDATE mart.anomalies SET status = 'expected' WHERE currency = 'EUR'"))
    _write(owner, found, "r2")
    assert _stored(owner) == [("EUR", 200.0, "expected"), ("USD", 80.0, "open")]
    with owner.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("UPDATE mart.anomalies SET currency = NULL"))


def test_feedback_carries_its_own_currency(owner):
    from backend.mart import analytics

    _write(owner, _anomalies(("EUR", 200.0, 5.0), ("USD", 80.0, 9.0)), "r1")
    with owner.connect() as conn:
        eur = conn.execute(sa.text("SELECT anomaly_id FROM mart.anomalies WHERE currency = 'EUR'")).scalar_one()
    analytics.set_anomaly_status(owner, eur, actor=EDITOR, verdict="expected", note="planned")
    with owner.begin() as conn:
        # A verdict from before analytics was per currency: it names none, so it covers every currency.
        conn.execute(
            sa.text(
                "INSERT INTO mart.anomaly_feedback (anomaly_id, level, dimension_value, kind, verdict)"
                " VALUES (NULL, 'service', 'Storage', 'spike', 'expected')"
            )
        )
    feedback = analytics_store.read_feedback(owner).sort_values("feedback_id")
    assert feedback["marked_currency"].tolist() == ["EUR", None]
    # The anomaly row goes (re-rated away, say): the verdict still suppresses only within EUR.
    with owner.begin() as conn:
        conn.execute(sa.text("DELETE FROM mart.anomalies WHERE anomaly_id = :a"), {"a": eur})
    assert analytics_store.read_feedback(owner).sort_values("feedback_id")["marked_currency"].tolist() == ["EUR", None]


def test_one_run_is_one_forecast_generation_per_currency_key(owner):
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
        stats = analytics_store.write_forecasts(owner, frame, run_id=run, interval_level=0.8, as_of=DAY)
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
                "SELECT currency, count(*), sum(point) FROM mart.forecasts WHERE scope_type = 'total'"
                " AND generated_at = (SELECT max(generated_at) FROM mart.forecasts WHERE scope_type = 'total')"
                " GROUP BY 1 ORDER BY 1"
            )
        ).all()
        generations = conn.execute(sa.text("SELECT count(DISTINCT generated_at) FROM mart.forecasts")).scalar()
    assert [tuple(r) for r in days] == [
        ("r1", "EUR", 1, 200),
        ("r1", "USD", 1, 14),
        ("r2", "EUR", 1, 200),
        ("r2", "USD", 1, 14),
    ]
    assert [(c, float(a), float(p)) for c, a, p in totals] == [("EUR", 1000.0, 3000.0), ("USD", 70.0, 210.0)]
    # One generation per run, holding each currency's rows under its own key: a reader names the currency.
    assert generations == 2
    assert [tuple(r) for r in latest] == [("EUR", 2, 200), ("USD", 2, 14)]
