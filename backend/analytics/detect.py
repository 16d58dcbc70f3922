"""Anomaly detection on one daily cost series: a weekday-aware robust baseline (median/MAD), pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

MAD_TO_SIGMA = 1.4826
METHODS = ("seasonal_median", "rolling_mean_pct", "zscore")


@dataclass(frozen=True)
class DetectorParams:
    """Tunables of the detector; `sensitivity` is the robust z a day must exceed (lower = more alerts)."""

    method: str = "seasonal_median"
    history_days: int = 56  # rounded up to whole weeks: the weekday profile needs every weekday equally often
    level_days: int = 14  # recent days whose deseasonalised median is the expected level
    scale_days: int = 28  # recent days whose deseasonalised MAD is the noise scale
    min_history_days: int = 14
    sensitivity: float = 4.5
    min_cost_impact: float = 10.0  # |actual - expected| per day, billing currency (defaults: bench_analytics)
    min_relative_impact: float = 0.3  # |actual - expected| / expected
    relative_scale_floor: float = 0.05  # noise is never assumed below 5% of the level (steady series have MAD 0)
    directions: str = "both"  # "up" reports only increases
    monthly_recurrence: bool = True  # a charge on the same day of the previous month is a pattern, not a surprise
    pct_threshold: float = 0.3  # rolling_mean_pct: today > mean x (1 + pct)
    shift_days: int = 3  # alerts on >= this many consecutive days form a level shift
    reanchor_shifts: bool = True  # after a confirmed shift, later days are judged against the new level only

    def weeks(self, available: int) -> int:
        """Whole weeks of history to use, given `available` days before the day evaluated."""
        return max(0, min(int(np.ceil(self.history_days / 7)), available // 7))

    def baseline_weeks(self, days: int) -> int:
        """Whole weeks of history a series of `days` days gives its last day, 0 when too short for a baseline."""
        weeks = self.weeks(days - 1)
        return weeks if weeks * 7 >= max(self.min_history_days, 7) else 0


def baseline(values: np.ndarray, params: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """Expected value and noise scale for every day (NaN where history is too short), from days before it only."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    expected = np.full(n, np.nan)
    scale = np.full(n, np.nan)
    weeks = params.baseline_weeks(n)
    if not weeks:
        return expected, scale
    expected[weeks * 7 :], scale[weeks * 7 :] = _window_baseline(x, weeks, params)
    return expected, scale


def _segment_baseline(x: np.ndarray, params: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """Like `baseline`, but the history grows week by week from the segment's first day (NaN before
    min_history_days), so the days after a level shift are judged against the new level only."""
    n = len(x)
    expected = np.full(n, np.nan)
    scale = np.full(n, np.nan)
    most = params.weeks(n - 1)
    first = max(int(np.ceil(params.min_history_days / 7)), 1)
    for weeks in range(first, most + 1):
        h = weeks * 7
        # Days h..h+6 have exactly `weeks` whole weeks behind them; the longest window serves every later day.
        stop = n if weeks == most else min(n, h + 7)
        if stop <= h:
            break
        e, sc = _window_baseline(x[:stop], weeks, params)
        expected[h:stop], scale[h:stop] = e, sc
    return expected, scale


def _window_baseline(x: np.ndarray, weeks: int, params: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """Expected value and scale of days h..n-1 (h = 7 x weeks) from the h days before each."""
    n, h = len(x), weeks * 7
    return window_baseline(sliding_window_view(x, h)[: n - h], weeks, params)  # row j: the history of day j + h


def last_day_baseline(series: np.ndarray, params: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """`baseline`'s expected value and scale of the last day of each row of `series` (rows of equal length, no
    NaN), every row at once: a service's anomaly is explained by thousands of resources."""
    n = series.shape[1]
    weeks = params.baseline_weeks(n)
    if not weeks:
        return np.full(len(series), np.nan), np.full(len(series), np.nan)
    return window_baseline(series[:, n - 1 - weeks * 7 : n - 1], weeks, params)


def window_baseline(windows: np.ndarray, weeks: int, params: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """Expected value and scale of the day after each row of `windows` (rows of 7 x weeks days); row by row."""
    h = weeks * 7
    if params.method == "rolling_mean_pct":
        mean = windows.mean(axis=1)
        return mean, mean * params.pct_threshold / params.sensitivity
    if params.method == "zscore":
        # The "fixed confidence interval on a univariate history" peers use: mean and standard deviation.
        return windows.mean(axis=1), np.maximum(windows.std(axis=1), 1e-9)
    # Position c in a window has weekday (weekday of day j + c); h is a whole number of weeks, so column 0 of
    # the (weeks, 7) view shares the weekday of the evaluated day j + h.
    by_week = windows.reshape(len(windows), weeks, 7)
    overall = np.median(windows, axis=1)
    profile = np.median(by_week, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(overall[:, None] > 0, profile / overall[:, None], 1.0)
        mean_factor = factor.mean(axis=1, keepdims=True)
        factor = np.where(mean_factor > 0, factor / mean_factor, 1.0)
        factor = np.where(factor > 0.05, factor, 1.0)  # a weekday with no cost carries no shape information
        deseason = windows / np.tile(factor, weeks)
    level = np.median(deseason[:, -min(params.level_days, h) :], axis=1)
    recent = deseason[:, -min(params.scale_days, h) :]
    mad = MAD_TO_SIGMA * np.median(np.abs(recent - level[:, None]), axis=1)
    mad = np.maximum(mad, params.relative_scale_floor * np.abs(level))
    return level * factor[:, 0], mad * factor[:, 0]


def detect(dates: np.ndarray, values: np.ndarray, params: DetectorParams, *, since=None) -> pd.DataFrame:
    """Anomalous days of one series: charge_date, actual, expected, lower_bound, upper_bound, severity, kind.

    `since` limits reporting to days on or after it (history before it still feeds the baseline)."""
    x = np.asarray(values, dtype=np.float64)
    dates = pd.to_datetime(pd.Series(dates)).dt.normalize().to_numpy()
    expected, scale = baseline(x, params)
    flag, z, impact = _flags(x, expected, scale, params)
    if params.reanchor_shifts:
        expected, scale, flag, z, impact = _reanchor(x, expected, scale, flag, params)
    k = params.sensitivity
    lower, upper = expected - k * scale, expected + k * scale
    if params.monthly_recurrence:
        flag &= ~_recurs_monthly(dates, impact, flag)
    kind = _kinds(flag, impact, expected, params.shift_days)
    out = pd.DataFrame(
        {
            "charge_date": dates,
            "actual": x,
            "expected": expected,
            "lower_bound": np.maximum(lower, 0.0),
            "upper_bound": upper,
            "impact": impact,
            "severity": np.abs(z),
            "kind": kind,
        }
    )[flag]
    if since is not None:
        out = out[out["charge_date"] >= pd.Timestamp(since)]
    return out.reset_index(drop=True)


def _flags(x, expected, scale, params: DetectorParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alert days (robust z beyond the sensitivity and both minimum impacts), their z and impact."""
    impact = x - expected
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(scale > 0, impact / scale, np.where(impact > 0, np.inf, 0.0))
        relative = np.where(np.abs(expected) > 0, np.abs(impact) / np.abs(expected), np.inf)
    flag = np.isfinite(expected) & (np.abs(z) >= params.sensitivity)
    flag &= (np.abs(impact) >= params.min_cost_impact) & (relative >= params.min_relative_impact)
    if params.directions == "up":
        flag &= impact > 0
    return flag, z, impact


def _reanchor(x, expected, scale, flag, params: DetectorParams):
    """After a confirmed level shift, judge later days against post-shift history only.

    A run of >= shift_days alerts in one direction whose next min_history_days still sit (by median) at least half
    the minimum relative impact away from the min_history_days before it is a shift. The rolling baseline would
    otherwise mix both levels for weeks: its weekday profile and noise scale come out wrong and one shift alerts
    again and again. Days within min_history_days of the shift keep the rolling baseline (it has caught up by then,
    and a shorter post-shift history is too noisy to judge by). Causal: day t uses only days before t."""
    n, span = len(x), max(params.min_history_days, 7)
    _, z, impact = _flags(x, expected, scale, params)
    i = 0
    while i < n:
        if not flag[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flag[j + 1] and np.sign(impact[j + 1]) == np.sign(impact[i]):
            j += 1
        if j - i + 1 >= params.shift_days and i + span < n:
            before = float(np.median(x[max(0, i - span) : i]))
            after = float(np.median(x[i : i + span]))
            moved = (after - before) * np.sign(impact[i])
            if moved > 0 and moved >= 0.5 * params.min_relative_impact * abs(before):
                seg_expected, seg_scale = _segment_baseline(x[i:], params)
                ok = np.flatnonzero(np.isfinite(seg_expected))
                expected, scale = expected.copy(), scale.copy()
                expected[i + ok], scale[i + ok] = seg_expected[ok], seg_scale[ok]
                flag, z, impact = _flags(x, expected, scale, params)
        i = j + 1
    return expected, scale, flag, z, impact


def _recurs_monthly(dates: np.ndarray, impact: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Days whose excess repeats the excess on the same day of the previous month (monthly purchases, invoices).

    Only a similar excess counts (within a factor 2), so a spike that happens to fall on that day still shows."""
    out = np.zeros(len(dates), dtype=bool)
    if not flag.any():
        return out
    ts = pd.DatetimeIndex(dates)
    position = {d: i for i, d in enumerate(ts)}
    for i in np.flatnonzero(flag):
        previous = ts[i] - pd.DateOffset(months=1)
        if previous.day != ts[i].day:
            continue
        j = position.get(previous)
        if j is None or not np.isfinite(impact[j]) or impact[i] == 0:
            continue
        ratio = impact[j] / impact[i]
        out[i] = 0.5 <= ratio <= 2.0
    return out


def _kinds(flag: np.ndarray, impact: np.ndarray, expected: np.ndarray, shift_days: int) -> np.ndarray:
    """spike / drop for isolated alerts; level_shift for runs of >= shift_days; new_cost where nothing was expected."""
    kind = np.where(impact >= 0, "spike", "drop").astype(object)
    i, n = 0, len(flag)
    while i < n:
        if not flag[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flag[j + 1]:
            j += 1
        if j - i + 1 >= shift_days:
            kind[i : j + 1] = "level_shift"
        i = j + 1
    with np.errstate(invalid="ignore"):
        kind[(np.abs(expected) < 1e-9) & (impact > 0)] = "new_cost"
    return kind
