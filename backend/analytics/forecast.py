"""Daily cost forecasts per series: candidate methods, per-series choice by backtest, empirical prediction intervals."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

METHODS = ("seasonal_naive", "seasonal_mean", "ets")


@dataclass(frozen=True)
class ForecastParams:
    """Tunables of the forecaster."""

    horizon_days: int = 30
    interval_level: float = 0.95
    profile_weeks: int = 8  # weeks whose median shapes the weekday profile
    level_days: int = 14  # seasonal_mean: recent days whose mean is the level
    selection_origins: int = 6  # backtest origins (a week apart) used to choose the method
    calibration_origins: int = 112  # daily origins whose errors give the interval
    interval_inflation: float = 1.3  # widens the empirical log-ratio band: overlapping origins understate spread
    min_history_days: int = 28
    methods: tuple[str, ...] = METHODS


def _profiles(hist: np.ndarray, w: int) -> np.ndarray:
    """Weekday factors for each row of `hist` (rows of at least 7 x w days, the most recent last)."""
    # Block column c holds days n - 7w + c + 7k, so it matches future step h (day n + h) when h % 7 == c.
    block = hist[:, hist.shape[1] - 7 * w :].reshape(len(hist), w, 7)
    overall = np.median(block.reshape(len(hist), -1), axis=1)
    # A series whose median day is 0 (a part-month file, a sparse service) divides by 0 twice here; its
    # factors are replaced by 1 below, so the warnings would only be noise on the user's console.
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.median(block, axis=1) / overall[:, None]
        factor = np.where(factor > 0.05, factor, 1.0)
        factor = factor / factor.mean(axis=1, keepdims=True)
    return np.where(overall[:, None] > 0, factor, 1.0)


def _seasonal_naive(hist: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    return np.tile(hist[:, -7:], (1, -(-horizon // 7)))[:, :horizon]


def _seasonal_mean(hist: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    n = hist.shape[1]
    factor = _profiles(hist, max(1, min(params.profile_weeks, n // 7)))
    recent = hist[:, -min(params.level_days, n) :]
    # Deseasonalise the recent days: day n - k sits at step -k, i.e. column (-k) mod 7.
    cols = np.arange(-recent.shape[1], 0) % 7
    level = np.mean(recent / factor[:, cols], axis=1)
    return level[:, None] * factor[:, np.arange(horizon) % 7]


# Smoothing weights searched by the damped-trend ETS: every (alpha, beta) pair, alpha-major (ties keep the first).
_ETS_GRID = np.array([(alpha, beta) for alpha in (0.1, 0.3, 0.5) for beta in (0.0, 0.05, 0.15)])
_ETS_PHI = 0.9
ETS_WINDOW = 112


def _ets(hist: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    """Damped-trend exponential smoothing (Holt) on the weekday-adjusted series; smoothing weights by grid search.

    Every row (history) and every grid point run in one numpy recursion over the time steps: the backtests fit
    hundreds of origins per series, and a Python loop per origin and weight was the analytics' bottleneck."""
    n = hist.shape[1]
    factor = _profiles(hist, max(1, min(params.profile_weeks, n // 7)))
    window = min(n, ETS_WINDOW)
    y = hist[:, n - window :] / factor[:, np.arange(-window, 0) % 7]
    alpha, beta, phi = _ETS_GRID[:, 0], _ETS_GRID[:, 1], _ETS_PHI
    level = np.repeat(y[:, :1], len(_ETS_GRID), axis=1)
    trend = np.zeros_like(level)
    sse = np.zeros_like(level)
    for t in range(1, window):
        predicted = level + phi * trend
        error = y[:, t : t + 1] - predicted
        sse += error * error
        new_level = predicted + alpha * error
        trend = phi * trend + beta * (new_level - level - phi * trend)
        level = new_level
    best = np.argmin(sse, axis=1)
    rows = np.arange(len(hist))
    damp = np.cumsum(phi ** np.arange(1, horizon + 1))
    path = level[rows, best][:, None] + damp[None, :] * trend[rows, best][:, None]
    return np.maximum(path, 0.0) * factor[:, np.arange(horizon) % 7]


_FORECASTERS = {"seasonal_naive": _seasonal_naive, "seasonal_mean": _seasonal_mean, "ets": _ets}


def predict(method: str, history: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    """Forecast of the `horizon` days after `history`."""
    history = np.asarray(history, dtype=np.float64)
    return predict_origins(method, history, np.array([len(history)]), horizon, params)[0]


def predict_origins(
    method: str, values: np.ndarray, origins: np.ndarray, horizon: int, params: ForecastParams
) -> np.ndarray:
    """(len(origins), horizon) forecasts, row i made from values[:origins[i]]: one vectorised fit per history length
    the method can see (the longest lookback any method uses), so a backtest costs a few numpy passes."""
    values = np.asarray(values, dtype=np.float64)
    origins = np.asarray(origins, dtype=np.int64)
    out = np.zeros((len(origins), horizon))
    if not len(origins):
        return out
    # No method looks further back than the ETS window or the weekday profile, so every origin with at least
    # that much history shares one history length (others keep their own, exactly as a single forecast would).
    lookback = max(ETS_WINDOW, 7 * params.profile_weeks, params.level_days, 7)
    seen = np.minimum(origins, lookback)
    for length in np.unique(seen):
        rows = np.flatnonzero(seen == length)
        idx = origins[rows, None] - length + np.arange(length)[None, :]
        out[rows] = _FORECASTERS[method](values[idx], horizon, params)
    return np.maximum(out, 0.0)


def backtest_origins(n: int, params: ForecastParams, horizon: int | None = None) -> np.ndarray:
    """Where the backtest's forecasts start in a history of n days: `selection_origins` weekly origins whose
    horizon ends by the last day, each with at least min_history_days behind it (latest first). The window the
    backtest covers is therefore from the earliest origin to the last day."""
    horizon = horizon or params.horizon_days
    origins = np.array([n - horizon - 7 * k for k in range(params.selection_origins)], dtype=np.int64)
    return origins[origins >= params.min_history_days]


def backtest_error(method: str, values: np.ndarray, params: ForecastParams, *, horizon: int | None = None) -> float:
    """Mean absolute percentage error of the horizon's total over `selection_origins` weekly origins."""
    horizon = horizon or params.horizon_days
    values = np.asarray(values, dtype=np.float64)
    origins = backtest_origins(len(values), params, horizon)
    if not len(origins):
        return float("nan")
    actual = np.array([values[o : o + horizon].sum() for o in origins])
    point = predict_origins(method, values, origins, horizon, params).sum(axis=1)
    ok = actual > 0
    return float(np.mean(np.abs(point[ok] - actual[ok]) / actual[ok])) if ok.any() else float("nan")


def choose_method(values: np.ndarray, params: ForecastParams) -> tuple[str, float]:
    """The method with the lowest backtest error (seasonal_mean when no backtest is possible)."""
    scored = [(backtest_error(m, values, params), m) for m in params.methods]
    scored = [(e, m) for e, m in scored if np.isfinite(e)]
    if not scored:
        return "seasonal_mean", float("nan")
    error, method = min(scored)
    return method, error


def ratio_quantiles(method: str, values: np.ndarray, params: ForecastParams, horizon: int) -> np.ndarray:
    """Per horizon step h: quantiles (lower, upper) of actual/forecast for the cumulative sum of steps 1..h and for
    the single day h, from daily origins over the recent past (empirical, so weekday, trend and noise all count)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    alpha = 1 - params.interval_level
    origins = n - horizon - np.arange(params.calibration_origins)
    origins = origins[origins >= params.min_history_days]
    out = np.ones((2, 2, horizon))
    if len(origins) < 8:
        # Too little history to calibrate: a wide fixed band instead of a falsely confident one.
        out[:, 0, :], out[:, 1, :] = 0.7, 1.3
        return out
    point = predict_origins(method, values, origins, horizon, params)
    actual = values[origins[:, None] + np.arange(horizon)[None, :]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cum_ratios = np.cumsum(actual, axis=1) / np.cumsum(point, axis=1)
        day_ratios = actual / point
    for i, ratios in enumerate((cum_ratios, day_ratios)):
        logs = np.log(np.where(np.isfinite(ratios) & (ratios > 0), ratios, 1.0))
        centre = np.median(logs, axis=0)
        lo = np.quantile(logs, alpha / 2, axis=0)
        hi = np.quantile(logs, 1 - alpha / 2, axis=0)
        out[i, 0] = np.exp(centre + params.interval_inflation * (lo - centre))
        out[i, 1] = np.exp(centre + params.interval_inflation * (hi - centre))
    return out


@dataclass
class SeriesForecast:
    method: str
    backtest_error: float
    dates: pd.DatetimeIndex
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    cum_lower: np.ndarray  # interval of the cumulative sum from the first forecast day to each day
    cum_upper: np.ndarray


def forecast_series(
    dates: np.ndarray,
    values: np.ndarray,
    params: ForecastParams,
    *,
    horizon: int | None = None,
    method: str | None = None,
) -> SeriesForecast | None:
    """Forecast the days after the last date: the backtest-chosen method, per-day and cumulative intervals."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < params.min_history_days:
        return None
    horizon = horizon or params.horizon_days
    error = float("nan")
    if method is None:
        method, error = choose_method(values, params)
    point = predict(method, values, horizon, params)
    q = ratio_quantiles(method, values, params, horizon)
    cum = np.cumsum(point)
    last = pd.Timestamp(pd.to_datetime(dates[-1]))
    return SeriesForecast(
        method=method,
        backtest_error=error,
        dates=pd.date_range(last + timedelta(days=1), periods=horizon, freq="D"),
        point=point,
        lower=point * q[1, 0],
        upper=point * q[1, 1],
        cum_lower=cum * q[0, 0],
        cum_upper=cum * q[0, 1],
    )


def month_end_forecast(
    dates: np.ndarray, values: np.ndarray, params: ForecastParams, *, method: str | None = None
) -> dict | None:
    """Total of the month of the last date: actual to date + forecast of the remaining days, with an interval."""
    last = pd.Timestamp(pd.to_datetime(dates[-1]))
    days_in_month = calendar.monthrange(last.year, last.month)[1]
    remaining = days_in_month - last.day
    month_start = np.datetime64(date(last.year, last.month, 1))
    to_date = float(np.asarray(values)[pd.to_datetime(dates).to_numpy() >= month_start].sum())
    if remaining == 0:
        return {
            "actual_to_date": to_date,
            "point": to_date,
            "lower": to_date,
            "upper": to_date,
            "method": "actual",
            "backtest_error": 0.0,
            "remaining_days": 0,
        }
    fc = forecast_series(dates, values, params, horizon=max(remaining, 1), method=method)
    if fc is None:
        return None
    return {
        "actual_to_date": to_date,
        "point": to_date + float(fc.point.sum()),
        "lower": to_date + float(fc.cum_lower[-1]),
        "upper": to_date + float(fc.cum_upper[-1]),
        "method": fc.method,
        "backtest_error": fc.backtest_error,
        "remaining_days": remaining,
    }
