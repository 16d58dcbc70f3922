"""Contributors, kind refinement, feedback suppression, series per currency and metrics that are not available."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backend.analytics.analyze import (
    complete_days,
    contributors,
    refine_kind,
    series_anomalies,
    series_forecasts,
    suppressed_by_feedback,
)
from backend.analytics.detect import DetectorParams
from backend.analytics.forecast import ForecastParams
from backend.analytics.series import level_series

DAYS = pd.date_range("2025-03-03", periods=70, freq="D")


def test_contributors_name_the_child_that_moved_and_new_cost():
    rows = []
    for d in DAYS:
        rows.append(("vm-1", d, 50.0, "D4s v5"))
        rows.append(("vm-2", d, 30.0, "D2s v5"))
    rows.append(("vm-new", DAYS[-1], 40.0, "E8s v5"))
    kids = pd.DataFrame(rows, columns=["child", "charge_date", "cost", "meter"])
    anomaly = pd.Series({"charge_date": DAYS[-1], "impact": 40.0})
    items = contributors(anomaly, kids, DetectorParams())
    assert items[0]["value"] == "vm-new" and items[0]["meter"] == "E8s v5" and items[0]["delta"] == 40.0
    assert refine_kind("spike", items, 40.0) == "new_cost"


def test_feedback_expected_suppresses_the_same_pattern_only():
    anomalies = pd.DataFrame(
        {
            "level": ["service", "service", "service"],
            "member": ["Bandwidth", "Bandwidth", "Functions"],
            "kind": ["spike", "spike", "spike"],
            "charge_date": pd.to_datetime(["2025-06-10", "2025-06-20", "2025-06-20"]),
            "impact": [100.0, 500.0, 100.0],
        }
    )
    feedback = pd.DataFrame(
        {
            "feedback_id": [7],
            "level": ["service"],
            "dimension_value": ["Bandwidth"],
            "kind": ["spike"],
            "verdict": ["expected"],
            "suppress_until": [None],
            "marked_date": [pd.Timestamp("2025-06-01")],
            "marked_impact": [120.0],
        }
    )
    by = suppressed_by_feedback(anomalies, feedback, default_days=90)
    assert by.tolist()[0] == 7  # same member, kind, similar size
    assert pd.isna(by.tolist()[1])  # 4x the marked size: a new problem
    assert pd.isna(by.tolist()[2])  # another member


def test_series_wrappers_fill_missing_days_and_emit_totals():
    series = pd.DataFrame(
        {"level": "service", "member": "X", "metric": "actual", "charge_date": DAYS[::2], "cost": 10.0}
    )
    found = series_anomalies(series, DetectorParams(), start=DAYS[0], end=DAYS[-1], since=DAYS[-7])
    assert found.empty  # alternate zero days are a stable pattern, not seven anomalies
    fc = series_forecasts(
        series,
        __import__("backend.analytics.forecast", fromlist=["ForecastParams"]).ForecastParams(
            calibration_origins=10, horizon_days=10
        ),
        start=DAYS[0],
        end=DAYS[-1],
    )
    assert set(fc["row_type"]) == {"day", "month_end", "next_days"}
    assert (fc["row_type"] == "day").sum() == 10


def _two_currency_costs() -> pd.DataFrame:
    """One service and one resource group billed in USD (subscription a) and EUR (subscription b)."""
    rows = [(d, *r) for d in DAYS for r in (("a", "rg", "Storage", "USD", 10.0), ("b", "rg", "Storage", "EUR", 1000.0))]
    columns = ["charge_date", "subscription_id", "resource_group", "service_name", "billing_currency", "actual_cost"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(amortized_cost=frame["actual_cost"])


def test_level_series_is_per_currency_never_summed():
    series = level_series(_two_currency_costs(), ["total", "service", "resource_group"], ["actual"])
    per_day = series.groupby(["level", "member", "currency"])["cost"].agg(["min", "max", "count"])
    # Every member is two series, each with its own currency's daily cost: 10 USD and 1000 EUR, never 1010.
    assert per_day.to_dict("index") == {
        (level, member, cur): {"min": cost, "max": cost, "count": len(DAYS)}
        for level, member in (("total", ""), ("service", "Storage"), ("resource_group", "rg"))
        for cur, cost in (("EUR", 1000.0), ("USD", 10.0))
    }
    # No billing_currency column: one series in the unknown currency "".
    plain = level_series(_two_currency_costs().drop(columns="billing_currency"), ["service"], ["actual"])
    assert set(plain["currency"]) == {""} and set(plain["cost"]) == {1010.0}


def test_series_wrappers_carry_the_currency():
    series = pd.DataFrame(
        {"level": "service", "member": "X", "metric": "actual", "currency": "EUR", "charge_date": DAYS, "cost": 10.0}
    )
    spiked = series.assign(cost=[10.0] * (len(DAYS) - 1) + [90.0])
    found = series_anomalies(spiked, DetectorParams(), start=DAYS[0], end=DAYS[-1], since=DAYS[-7])
    assert found[["member", "currency", "actual"]].to_dict("records") == [
        {"member": "X", "currency": "EUR", "actual": 90.0}
    ]
    fc = series_forecasts(series, ForecastParams(calibration_origins=10, horizon_days=10), start=DAYS[0], end=DAYS[-1])
    assert set(fc["currency"]) == {"EUR"}


def test_feedback_suppresses_within_the_currency_it_was_given_in():
    anomalies = pd.DataFrame(
        {
            "level": ["service"] * 3,
            "member": ["Storage"] * 3,
            "currency": ["EUR", "USD", "GBP"],
            "kind": ["spike"] * 3,
            "charge_date": pd.to_datetime(["2025-06-10"] * 3),
            "impact": [100.0] * 3,
        }
    )
    feedback = pd.DataFrame(
        {
            "feedback_id": [7, 8],
            "level": ["service", "service"],
            "dimension_value": ["Storage", "Storage"],
            "kind": ["spike", "spike"],
            "verdict": ["expected", "expected"],
            "suppress_until": [None, None],
            "marked_date": [pd.Timestamp("2025-06-01")] * 2,
            "marked_impact": [120.0, 120.0],
            "marked_currency": ["EUR", "GBP"],
        }
    )
    by = suppressed_by_feedback(anomalies, feedback, default_days=90)
    assert by.tolist()[0] == 7 and pd.isna(by.tolist()[1]) and by.tolist()[2] == 8
    # A verdict whose anomaly (and so currency) is unknown covers every currency, as before.
    unknown = feedback.iloc[[0]].assign(marked_currency=[None])
    assert suppressed_by_feedback(anomalies, unknown, default_days=90).tolist() == [7, 7, 7]


def _series(cost) -> pd.DataFrame:
    return pd.DataFrame(
        {"level": "service", "member": "X", "metric": "amortized", "currency": "EUR", "charge_date": DAYS, "cost": cost}
    )


def test_complete_days_keeps_a_missing_metric_apart_from_a_zero_cost():
    rows = pd.DataFrame({"charge_date": [DAYS[0], DAYS[1], DAYS[1], DAYS[3]], "cost": [1.0, 2.0, np.nan, 4.0]})
    full = complete_days(rows, DAYS[0], DAYS[4], unavailable={DAYS[4].date()})
    # Day 1 has a row lacking the metric (its sum is no total), day 2 no rows (0), day 4 no row carries it.
    assert full["cost"].fillna(-1).tolist() == [1.0, -1, 0.0, 4.0, -1]


def test_a_series_whose_metric_is_never_available_has_no_anomalies_and_no_forecast():
    params = ForecastParams(calibration_origins=10, horizon_days=10)
    nothing = _series(np.nan)
    assert series_anomalies(nothing, DetectorParams(), start=DAYS[0], end=DAYS[-1], since=DAYS[-7]).empty
    assert series_forecasts(nothing, params, start=DAYS[0], end=DAYS[-1]).empty
    # Days of the currency no row carries the metric on are not zeros either, even where the member has no row.
    some = _series(10.0).iloc[::2]
    everything_off = {d.date() for d in DAYS}
    assert series_forecasts(some, params, start=DAYS[0], end=DAYS[-1], unavailable=everything_off).empty


def test_days_without_the_metric_are_skipped_not_scored_as_zero():
    params = DetectorParams()
    cost = np.full(len(DAYS), 10.0)
    cost[40:43] = np.nan  # three days only the other metric's export covers
    found = series_anomalies(_series(cost), params, start=DAYS[0], end=DAYS[-1], since=DAYS[0])
    assert found.empty  # a 0 there would be three drops, and the days after them a recovery
    cost[-1] = 90.0
    found = series_anomalies(_series(cost), params, start=DAYS[0], end=DAYS[-1], since=DAYS[-7])
    assert found[["charge_date", "actual"]].to_dict("records") == [{"charge_date": DAYS[-1].date(), "actual": 90.0}]


def test_forecasts_learn_from_the_available_days_up_to_the_last_one():
    params = ForecastParams(calibration_origins=10, horizon_days=10)
    cost = np.full(len(DAYS), 10.0)
    cost[-1] = np.nan  # not available on the last day: nothing to forecast from
    assert series_forecasts(_series(cost), params, start=DAYS[0], end=DAYS[-1]).empty
    cost = np.full(len(DAYS), 10.0)
    cost[5] = np.nan  # in March: the forecast learns from the days after it; May's month to date is whole
    fc = series_forecasts(_series(cost), params, start=DAYS[0], end=DAYS[-1])
    assert set(fc["row_type"]) == {"day", "month_end", "next_days"}
    assert fc.loc[fc["row_type"] == "day", "point"].tolist() == pytest.approx([10.0] * 10)
    cost[-3] = np.nan  # a day of this month lacks it: no month-to-date total, so no month-end row
    cost[5] = 10.0
    fc = series_forecasts(_series(cost), params, start=DAYS[0], end=DAYS[-1])
    assert "month_end" not in set(fc["row_type"])


def test_level_series_marks_days_a_metric_is_not_available():
    costs = _two_currency_costs()
    # EUR's subscription b has only an actual-cost export: amortized is null on all its rows.
    costs.loc[costs["billing_currency"] == "EUR", "amortized_cost"] = np.nan
    series = level_series(costs, ["total", "service"], ["actual", "amortized"])
    known = series.groupby(["metric", "currency"])["cost"].apply(lambda c: int(c.notna().sum())).to_dict()
    assert known == {("actual", "EUR"): 2 * len(DAYS), ("actual", "USD"): 2 * len(DAYS), ("amortized", "EUR"): 0,
                     ("amortized", "USD"): 2 * len(DAYS)}  # fmt: skip
