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


def _events(found: pd.DataFrame) -> int:
    """Runs of consecutive alert days."""
    days = pd.to_datetime(found["charge_date"]).sort_values()
    return int((days.diff() != pd.Timedelta(days=1)).sum())


LONG = pd.date_range("2025-01-06", periods=240, freq="D")


def weekly_long(seed: int, noise: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.where(LONG.weekday >= 5, 0.6, 1.0) * np.exp(noise * rng.standard_normal(len(LONG)))


def test_level_shift_with_its_own_weekday_shape_is_one_event():
    # A new always-on cost (no weekend dip) on a workload that dips at weekends: the rolling baseline mixes both
    # levels and shapes for weeks and alerted again about 3-4 weeks after the shift; re-anchoring ends that.
    rng = np.random.default_rng(5)
    x = 100.0 * np.where(LONG.weekday >= 5, 0.45, 1.0) * np.exp(0.03 * rng.standard_normal(len(LONG)))
    x[90:] += 45.0
    found = detect(LONG, x, DetectorParams())
    assert found["charge_date"].min() == LONG[90]
    assert _events(found) == 1
    assert set(found["kind"]) == {"level_shift"}
    assert _events(detect(LONG, x, DetectorParams(reanchor_shifts=False))) > 1


def test_after_a_shift_a_later_spike_is_found_against_the_new_level():
    x = weekly_long(seed=2)
    x[80:] *= 1.6
    x[150] += 0.6 * x[150]
    found = detect(LONG, x, DetectorParams())
    spikes = found[found["charge_date"] > LONG[100]]
    assert list(spikes["charge_date"]) == [LONG[150]]
    assert abs(spikes.iloc[0]["expected"] - x[150] / 1.6) / (x[150] / 1.6) < 0.1


def test_a_multi_day_spike_does_not_move_the_baseline():
    # Five high days are a run like a shift's first days, but the fortnight after them is back to normal: no
    # re-anchoring, so the return to normal is no "drop" and the next spike is judged against the usual level.
    x = weekly_long(seed=4)
    x[100:105] *= 1.8
    x[140] *= 1.7
    found = detect(LONG, x, DetectorParams())
    assert list(found["charge_date"]) == [*LONG[100:105], LONG[140]]
    assert (found["impact"] > 0).all()
