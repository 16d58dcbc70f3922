"""Forecast methods, backtest choice and intervals on synthetic seasonal series."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.analytics.forecast import (
    ForecastParams,
    choose_method,
    forecast_series,
    month_end_forecast,
    predict,
    predict_origins,
)

DATES = pd.date_range("2025-01-01", periods=200, freq="D")


def series(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weekend = np.where(DATES.weekday >= 5, 0.7, 1.0)
    return 100.0 * weekend * np.exp(0.04 * rng.standard_normal(len(DATES)))


def test_every_method_follows_the_weekly_shape():
    x = series()
    for method in ("seasonal_naive", "seasonal_mean", "ets"):
        point = predict(method, x[:-14], 14, ForecastParams())
        assert np.abs(point.sum() - x[-14:].sum()) / x[-14:].sum() < 0.08, method


def test_choice_by_backtest_and_interval_contains_point():
    x = series()
    method, error = choose_method(x, ForecastParams())
    assert method in ("seasonal_naive", "seasonal_mean", "ets") and 0 <= error < 0.1
    fc = forecast_series(DATES.to_numpy(), x, ForecastParams(calibration_origins=30))
    assert len(fc.point) == 30 and fc.dates[0] == DATES[-1] + pd.Timedelta(days=1)
    assert np.all(fc.lower <= fc.point) and np.all(fc.point <= fc.upper)
    assert np.all(fc.cum_lower <= np.cumsum(fc.point)) and np.all(np.cumsum(fc.point) <= fc.cum_upper)


def test_month_end_forecast_adds_actual_to_date():
    x = series()
    cut = int(np.flatnonzero(pd.Timestamp("2025-06-15") == DATES)[0]) + 1
    r = month_end_forecast(DATES[:cut].to_numpy(), x[:cut], ForecastParams(calibration_origins=30))
    assert r["remaining_days"] == 15
    assert abs(r["actual_to_date"] - x[cut - 15 : cut].sum()) < 1e-6
    truth = x[(DATES >= "2025-06-01") & (DATES <= "2025-06-30")].sum()
    assert abs(r["point"] - truth) / truth < 0.05
    assert r["lower"] <= r["point"] <= r["upper"]


def test_batched_backtest_forecasts_equal_one_fit_per_origin():
    # Short origins see fewer weeks (their own profile and ETS window), long ones share the full lookback.
    x = series(seed=8)
    x[120:] *= 1.3  # a shift, so the trend and level terms matter
    origins = np.array([28, 33, 56, 90, 111, 112, 113, 150, 190])
    params = ForecastParams()
    for method in ("seasonal_naive", "seasonal_mean", "ets"):
        batched = predict_origins(method, x, origins, 10, params)
        single = np.vstack([predict(method, x[:o], 10, params) for o in origins])
        assert batched.shape == (len(origins), 10)
        np.testing.assert_allclose(batched, single, rtol=1e-12, atol=1e-9, err_msg=method)


def test_ets_carries_a_trend_forward():
    # A steady trend: the fitted trend term carries it forward (a level-only fit would stay flat).
    x = 100.0 + 0.5 * np.arange(140)
    point = predict("ets", x, 7, ForecastParams())
    assert np.all(np.diff(point) > 0.4)
