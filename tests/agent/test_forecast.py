"""The forecast tool answers in one billing currency: the latest generation of that currency and its actual spend."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from backend.agent.tools import AgentContext, forecast_impl
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade

pytestmark = pytest.mark.slow  # a fresh migrated database per test

START, DAYS = dt.date(2026, 1, 1), 50
AS_OF = START + dt.timedelta(days=DAYS - 1)  # 2026-02-19: nine days of February left to forecast


def _mart(pg_url: str, tmp_path, currencies: dict[int, str]) -> sa.Engine:
    """A migrated mart of two subscriptions' synthetic cost, subscription i billed in currencies[i] (EUR's
    costs 100x USD's, so EUR is the larger)."""
    from backend.lake.delta import Lake
    from backend.lake.storage import LakeLocation
    from backend.mart.load import load_gold
    from tests.mart import synthetic_gold

    upgrade(pg_url)
    daily = synthetic_gold.gold_cost_daily(start=START, days=DAYS, rows_per_day=20, resources=40, subscriptions=2)
    frame = daily.to_pandas()
    subs = sorted(frame["subscription_id"].unique())
    frame["billing_currency"] = frame["subscription_id"].map({s: currencies[i] for i, s in enumerate(subs)})
    eur = frame["billing_currency"] == "EUR"
    for col in ("actual_cost", "amortized_cost"):
        frame.loc[eur, col] = frame.loc[eur, col].map(lambda c: c * 100)
    lake = Lake(LakeLocation(uri=str(tmp_path / "lake")))
    synthetic_gold.write_gold(lake, pa.Table.from_pandas(frame, schema=daily.schema, preserve_index=False))
    load_gold(pg_url, lake, run_id="r1")
    return owner_engine(pg_url, poolclass=sa.pool.NullPool)


def _forecasts(engine: sa.Engine, points: dict[str, float], generated: dt.datetime) -> None:
    """Nine days of total forecasts per currency, one generation (as a run writes them)."""
    rows = [
        {"d": AS_OF + dt.timedelta(days=i), "p": point, "c": currency, "g": generated}
        for currency, point in points.items()
        for i in range(1, 10)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mart.forecasts (scope_type, scope_value, metric, forecast_date, point, lower_bound,"
                " upper_bound, currency, method, generated_at) VALUES ('total', '', 'actual', :d, :p, :p, :p, :c,"
                " 'seasonal_mean', :g)"
            ),
            rows,
        )


def _spent(engine: sa.Engine, currency: str) -> float:
    with engine.connect() as conn:
        return float(
            conn.execute(
                sa.text(
                    "SELECT sum(a.actual_cost) FROM mart.agg_cost_daily a JOIN mart.dim_currency c USING (currency_key)"
                    " WHERE c.currency_code = :c AND a.charge_date >= '2026-02-01'"
                ),
                {"c": currency},
            ).scalar_one()
        )


def test_two_currencies_answer_in_the_largest_and_say_so(pg_url, tmp_path):
    engine = _mart(pg_url, tmp_path, {0: "USD", 1: "EUR"})
    gen = dt.datetime(2026, 2, 20, tzinfo=dt.UTC)
    _forecasts(engine, {"EUR": 999.0}, gen - dt.timedelta(days=1))  # an older generation: superseded
    _forecasts(engine, {"EUR": 100.0, "USD": 7.0}, gen)
    outcome = forecast_impl(AgentContext(engine=engine, timeout_ms=5000))
    spent = _spent(engine, "EUR")
    # EUR's actual to date + EUR's latest forecast; never USD's cost or points added in.
    assert f"2026-02: {spent + 900:,.2f} EUR" in outcome.summary
    assert f"actual {spent:,.2f} to {AS_OF}" in outcome.summary
    assert "largest of the scope's currencies (EUR, USD)" in outcome.summary
    assert outcome.frame["forecast"].dropna().tolist() == [100.0] * 9
    assert outcome.frame["actual"].sum() == pytest.approx(spent)
    engine.dispose()


def test_one_currency_is_named_without_a_note(pg_url, tmp_path):
    engine = _mart(pg_url, tmp_path, {0: "USD", 1: "USD"})
    _forecasts(engine, {"USD": 7.0}, dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    outcome = forecast_impl(AgentContext(engine=engine, timeout_ms=5000))
    spent = _spent(engine, "USD")
    assert f"2026-02: {spent + 63:,.2f} USD" in outcome.summary and "currencies" not in outcome.summary
    assert np.isfinite(outcome.frame["actual"]).sum() == 19
    engine.dispose()
