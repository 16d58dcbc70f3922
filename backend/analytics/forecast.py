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


def weekday_profile(history: np.ndarray, weeks: int) -> np.ndarray:
    """Multiplicative factor per position mod 7 (position 0 = the day after the history ends), mean 1."""
    n = len(history)
    w = max(1, min(weeks, n // 7))
    block = history[n - 7 * w :].reshape(w, 7)
    overall = np.median(block)
    if overall <= 0:
        return np.ones(7)
    factor = np.median(block, axis=0) / overall
    factor = np.where(factor > 0.05, factor, 1.0)
    # Block column c holds days n - 7w + c + 7k, so it matches future step h (day n + h) when h % 7 == c.
    return factor / factor.mean()


def _seasonal_naive(history: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    last_week = history[-7:]
    return np.resize(last_week, horizon)


def _seasonal_mean(history: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    factor = weekday_profile(history, params.profile_weeks)
    n = len(history)
    recent = history[-params.level_days :]
    # Deseasonalise the recent days: day n - k sits at step -k, i.e. column (-k) mod 7.
    cols = (np.arange(n - len(recent), n) - n) % 7
    level = float(np.mean(recent / factor[cols]))
    return level * factor[np.arange(horizon) % 7]


def _ets(history: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    """Damped-trend exponential smoothing (Holt) on the weekday-adjusted series; smoothing weights by grid search."""
    factor = weekday_profile(history, params.profile_weeks)
    n = len(history)
    window = min(n, 112)
    y = history[-window:] / factor[(np.arange(n - window, n) - n) % 7]
    best = None
    for alpha in (0.1, 0.3, 0.5):
        for beta in (0.0, 0.05, 0.15):
            level, trend, sse, phi = y[0], 0.0, 0.0, 0.9
            for value in y[1:]:
                predicted = level + phi * trend
                error = value - predicted
                sse += error * error
                new_level = predicted + alpha * error
                trend = phi * trend + beta * (new_level - level - phi * trend)
                level = new_level
            if best is None or sse < best[0]:
                best = (sse, level, trend, phi)
    _, level, trend, phi = best
    steps = np.arange(1, horizon + 1)
    damp = np.cumsum(phi**steps)
    return np.maximum(level + damp * trend, 0.0) * factor[np.arange(horizon) % 7]


_FORECASTERS = {"seasonal_naive": _seasonal_naive, "seasonal_mean": _seasonal_mean, "ets": _ets}


def predict(method: str, history: np.ndarray, horizon: int, params: ForecastParams) -> np.ndarray:
    return np.maximum(_FORECASTERS[method](np.asarray(history, dtype=np.float64), horizon, params), 0.0)


def backtest_error(method: str, values: np.ndarray, params: ForecastParams, *, horizon: int | None = None) -> float:
    """Mean absolute percentage error of the horizon's total over `selection_origins` weekly origins."""
    horizon = horizon or params.horizon_days
    errors = []
    n = len(values)
    for k in range(params.selection_origins):
        origin = n - horizon - 7 * k
        if origin < params.min_history_days:
            break
        actual = values[origin : origin + horizon].sum()
        if actual <= 0:
            continue
        point = predict(method, values[:origin], horizon, params).sum()
        errors.append(abs(point - actual) / actual)
    return float(np.mean(errors)) if errors else float("nan")


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
    n = len(values)
    alpha = 1 - params.interval_level
    cum_ratios, day_ratios = [], []
    for k in range(params.calibration_origins):
        origin = n - horizon - k
        if origin < params.min_history_days:
            break
        point = predict(method, values[:origin], horizon, params)
        actual = values[origin : origin + horizon]
        with np.errstate(invalid="ignore", divide="ignore"):
            cum_ratios.append(np.cumsum(actual) / np.cumsum(point))
            day_ratios.append(actual / point)
    out = np.ones((2, 2, horizon))
    if len(cum_ratios) < 8:
        # Too little history to calibrate: a wide fixed band instead of a falsely confident one.
        out[:, 0, :], out[:, 1, :] = 0.7, 1.3
        return out
    for i, ratios in enumerate((np.array(cum_ratios), np.array(day_ratios))):
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
