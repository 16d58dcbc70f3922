"""The detector on small hand-made series: seasonality is not an anomaly, spikes / shifts / new cost are."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.analytics.detect import DetectorParams, detect

DATES = pd.date_range("2025-01-06", periods=120, freq="D")  # starts on a Monday


def weekly(seed: int = 1, level: float = 100.0, noise: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weekend = np.where(DATES.weekday >= 5, 0.6, 1.0)
    return level * weekend * np.exp(noise * rng.standard_normal(len(DATES)))


def test_weekly_seasonality_alone_raises_nothing():
    assert detect(DATES, weekly(), DetectorParams()).empty


def test_spike_found_on_its_day_with_expected_and_interval():
    x = weekly()
    x[100] += 60.0
    found = detect(DATES, x, DetectorParams())
    assert list(found["charge_date"]) == [DATES[100]]
    row = found.iloc[0]
    assert row.kind == "spike"
    assert row.lower_bound < row.expected < row.upper_bound < row.actual
    assert abs(row.expected - x[100] + 60.0) < 10


def test_level_shift_is_classified_and_alerts_from_day_one():
    x = weekly()
    x[90:] *= 1.5
    found = detect(DATES, x, DetectorParams())
    assert found["charge_date"].min() == DATES[90]
    first_days = found[found["charge_date"] < DATES[95]]
    assert len(first_days) == 5 and set(first_days["kind"]) == {"level_shift"}


def test_new_series_is_new_cost():
    x = np.zeros(len(DATES))
    x[100:] = 50.0
    found = detect(DATES, x, DetectorParams())
    assert found.iloc[0]["kind"] == "new_cost" and found.iloc[0]["charge_date"] == DATES[100]


def test_min_cost_impact_and_sensitivity_are_honoured():
    x = weekly(level=10.0)
    x[100] += 6.0  # +60% but only 6 currency units
    assert detect(DATES, x, DetectorParams(min_cost_impact=10.0)).empty
    assert len(detect(DATES, x, DetectorParams(min_cost_impact=1.0))) == 1
    assert detect(DATES, x, DetectorParams(min_cost_impact=1.0, sensitivity=50.0)).empty


def test_monthly_recurring_charge_is_a_pattern_not_an_anomaly():
    x = weekly()
    firsts = np.flatnonzero(DATES.day == 1)
    x[firsts] += 200.0
    found = detect(DATES, x, DetectorParams())
    # Only the first payment after the history fills has no earlier month to compare with; later ones recur.
    assert len(found) <= 1
    assert DATES[firsts[-1]] not in set(found["charge_date"])


def test_since_limits_reported_days_only():
    x = weekly()
    x[70] += 80.0
    x[110] += 80.0
    found = detect(DATES, x, DetectorParams(), since=DATES[100])
    assert list(found["charge_date"]) == [DATES[110]]
