"""Per-series analytics as pure pandas functions (anomalies, forecasts, contributors, feedback), shared by Spark and tests."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import timedelta

import numpy as np
import pandas as pd

from backend.analytics.detect import DetectorParams, detect, last_day_baseline
from backend.analytics.forecast import ForecastParams, forecast_series

# A series is one member's cost in one billing currency: amounts in different currencies are never added.
SERIES_KEYS = ["level", "member", "metric", "currency"]
ANOMALY_COLUMNS = [
    *SERIES_KEYS,
    "charge_date",
    "actual",
    "expected",
    "lower_bound",
    "upper_bound",
    "impact",
    "severity",
    "kind",
]
ANOMALY_SPARK_SCHEMA = (
    "level string, member string, metric string, currency string, charge_date date, actual double, expected double, "
    "lower_bound double, upper_bound double, impact double, severity double, kind string"
)
FORECAST_COLUMNS = [
    *SERIES_KEYS,
    "row_type",
    "forecast_date",
    "period_end",
    "actual_to_date",
    "point",
    "lower_bound",
    "upper_bound",
    "method",
    "backtest_error",
]
FORECAST_SPARK_SCHEMA = (
    "level string, member string, metric string, currency string, row_type string, forecast_date date, "
    "period_end date, actual_to_date double, point double, lower_bound double, upper_bound double, method string, "
    "backtest_error double"
)


def complete_days(series: pd.DataFrame, start, end, *, unavailable: Collection = ()) -> pd.DataFrame:
    """One series (charge_date, cost) on every day from start to end. A day without rows costs zero; a day whose
    rows lack the metric (a null cost), or one of `unavailable` (days no row of the series' currency carries the
    metric), is NaN: the metric is not available there, which is not a cost of 0."""
    days = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D")
    dates = pd.to_datetime(series["charge_date"])
    cost = series["cost"].astype(float)
    daily = cost.groupby(dates).sum()
    # A sum over rows where one lacks the metric is not the day's cost (as the mart's totals say "not available").
    lacking = cost.isna().groupby(dates).any()
    daily[lacking] = np.nan
    out = daily.reindex(days, fill_value=0.0)
    if len(unavailable):
        out[out.index.isin(pd.to_datetime(list(unavailable)))] = np.nan
    return pd.DataFrame({"charge_date": days, "cost": out.to_numpy(dtype=float)})


def available_runs(full: pd.DataFrame) -> list[pd.DataFrame]:
    """The runs of consecutive days with a known cost in a complete_days frame, oldest first. Detection and
    forecasting need a gapless daily history (weekday positions), so each run is a series of its own."""
    ok = np.isfinite(full["cost"].to_numpy(dtype=float))
    if ok.all():
        return [full]
    edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(np.int8), 0]))
    return [full.iloc[a:b].reset_index(drop=True) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _keys(series: pd.DataFrame) -> dict:
    # A series without a currency column is one unknown currency, "" (as level_series makes it).
    return {k: series[k].iloc[0] if k in series.columns else "" for k in SERIES_KEYS}


def series_anomalies(
    series: pd.DataFrame,
    params: DetectorParams,
    *,
    start,
    end,
    since=None,
    days: Collection | None = None,
    unavailable: Collection = (),
) -> pd.DataFrame:
    """Anomalies of one series (level, member, metric, currency, charge_date, cost) reported on days >= since and,
    when `days` is given, on those days only (the days this run scores; the rest of start..end is history).

    Days the metric is not available (null cost, or `unavailable`) are neither scored nor history: each run of
    available days is scored on its own. A series none of whose rows carries the metric has no anomalies (the days
    without rows would otherwise read as a history of zeros)."""
    if not series["cost"].notna().any():
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    keys = _keys(series)
    runs = available_runs(complete_days(series, start, end, unavailable=unavailable))
    parts = [detect(run["charge_date"].to_numpy(), run["cost"].to_numpy(), params, since=since) for run in runs]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    found = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if days is not None:
        found = found[found["charge_date"].isin(pd.to_datetime(list(days)))].copy()
        if found.empty:
            return pd.DataFrame(columns=ANOMALY_COLUMNS)
    for name, value in keys.items():
        found[name] = value
    found["charge_date"] = pd.to_datetime(found["charge_date"]).dt.date
    return found[ANOMALY_COLUMNS]


def series_forecasts(
    series: pd.DataFrame, params: ForecastParams, *, start, end, unavailable: Collection = ()
) -> pd.DataFrame:
    """Daily forecast rows for the next horizon days plus 'month_end' and 'next_days' total rows for one series.

    The forecast learns from the run of available days that ends on `end`: none when the metric is not available
    on `end`, or on none of the series' rows; no 'month_end' row when it is not available on every day of the
    month to date."""
    if not series["cost"].notna().any():
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    keys = _keys(series)
    full = complete_days(series, start, end, unavailable=unavailable)
    if not np.isfinite(full["cost"].iloc[-1]):
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    full = available_runs(full)[-1]
    dates, values = full["charge_date"].to_numpy(), full["cost"].to_numpy()
    fc = forecast_series(dates, values, params)
    if fc is None:
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    last = pd.Timestamp(end)
    rows = [
        {
            "row_type": "day",
            "forecast_date": d.date(),
            "period_end": d.date(),
            "actual_to_date": 0.0,
            "point": p,
            "lower_bound": lo,
            "upper_bound": hi,
        }
        for d, p, lo, hi in zip(fc.dates, fc.point, fc.lower, fc.upper, strict=True)
    ]
    month_end = (last + pd.offsets.MonthEnd(0)).normalize()
    remaining = (month_end - last).days
    to_date = float(values[full["charge_date"] >= last.replace(day=1)].sum())
    if remaining == 0:
        eom = (to_date, to_date, to_date)
    else:
        # The horizon's cumulative interval at the month's last day: one calibration serves both totals.
        step = min(remaining, len(fc.point)) - 1
        eom = (
            to_date + float(fc.point[: step + 1].sum()),
            to_date + float(fc.cum_lower[step]),
            to_date + float(fc.cum_upper[step]),
        )
    # A month with a day the metric is not available on has no known cost to date, hence no month-end total.
    if full["charge_date"].iloc[0] <= max(last.replace(day=1), pd.Timestamp(start)):
        rows.append(
            {
                "row_type": "month_end",
                "forecast_date": last.replace(day=1).date(),
                "period_end": month_end.date(),
                "actual_to_date": to_date,
                "point": eom[0],
                "lower_bound": eom[1],
                "upper_bound": eom[2],
            }
        )
    rows.append(
        {
            "row_type": "next_days",
            "forecast_date": fc.dates[0].date(),
            "period_end": fc.dates[-1].date(),
            "actual_to_date": 0.0,
            "point": float(fc.point.sum()),
            "lower_bound": float(fc.cum_lower[-1]),
            "upper_bound": float(fc.cum_upper[-1]),
        }
    )
    out = pd.DataFrame(rows)
    for name, value in keys.items():
        out[name] = value
    out["method"] = fc.method
    out["backtest_error"] = fc.backtest_error
    return out[FORECAST_COLUMNS]


def _child_days(children: pd.DataFrame, start, day) -> tuple[pd.Index, np.ndarray]:
    """Every child's complete_days at once: (children in order, a children x days matrix), 0 for a day without
    rows, NaN for a day whose rows lack the metric. Scattered into one matrix with numpy instead of a groupby
    per child (an anomaly on a service of a 5M-row estate has thousands of resources under it), and instead of
    a grouped sum + unstack per anomaly (15 ms each, a first run explains hundreds)."""
    first = np.datetime64(pd.Timestamp(start).date(), "D")
    ndays = (pd.Timestamp(day).normalize() - pd.Timestamp(start).normalize()).days + 1
    named = children["child"].notna().to_numpy()  # as a groupby: rows without a child name no child
    codes, names = pd.factorize(children["child"][named], sort=True)
    offset = (_days(children["charge_date"][named]) - first).astype(int)
    cost = children["cost"][named].astype(float).to_numpy()
    inside = (offset >= 0) & (offset < ndays)  # days outside the window only name their child
    where = (codes[inside], offset[inside])
    matrix = np.zeros((len(names), max(ndays, 0)))
    np.add.at(matrix, where, np.nan_to_num(cost[inside], nan=0.0))
    missing = np.zeros(matrix.shape, dtype=bool)
    np.logical_or.at(missing, where, np.isnan(cost[inside]))
    matrix[missing] = np.nan  # as complete_days says: a day with a row lacking the metric is unknown, not 0
    return pd.Index(names), matrix


def _days(values: pd.Series) -> np.ndarray:
    """Charge dates as numpy days. A datetime column is cast, not parsed: pd.to_datetime on a Series already of
    datetimes still boxes thousands of them to decide whether to cache (most of explain's time at 1M rows)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.to_numpy().astype("datetime64[D]")
    return pd.to_datetime(values).to_numpy().astype("datetime64[D]")


def _expected_on_the_day(matrix: np.ndarray, params: DetectorParams) -> np.ndarray:
    """Each child's expected value on the last day of its row: the baseline of its history since the metric was
    last unavailable for it (never a made-up 0), or the median of that history when it is too short for one.
    Children with the same length of history are scored together (one baseline per length, not per child)."""
    n = matrix.shape[1]
    unknown = ~np.isfinite(matrix)
    # Length of each row's history: the days after its last unknown one (all n when none is unknown).
    lengths = np.where(unknown.any(axis=1), np.argmax(unknown[:, ::-1], axis=1), n)
    expected = np.full(len(matrix), np.nan)
    for length in np.unique(lengths):
        if length == 0:
            continue  # the last day itself is unknown: the child is skipped
        rows = np.flatnonzero(lengths == length)
        history = matrix[rows, n - length :]
        exp, _ = last_day_baseline(history, params)
        if length > 1:
            fallback = np.median(history[:, :-1], axis=1)
            exp = np.where(np.isfinite(exp), exp, fallback)
        expected[rows] = exp
    return expected


def contributors(
    anomaly: pd.Series, children: pd.DataFrame, params: DetectorParams, *, top: int = 5, child_name: str = "resource"
) -> list[dict]:
    """Which members one level down explain an anomaly: each child's expected value (same baseline as the parent)
    against its actual on the day, largest deltas in the anomaly's direction first.

    `children` holds (child, charge_date, cost[, meter]) rows of the anomalous member's history up to the day."""
    day = pd.Timestamp(anomaly["charge_date"])
    start = day - timedelta(days=int(np.ceil(params.history_days / 7)) * 7)
    out = []
    if children.empty:
        return out
    names, matrix = _child_days(children, start, day)
    meters: dict = {}
    if "meter" in children.columns:
        # Each child's meter of its largest row on the day (the last of equals, as a stable sort leaves them).
        on_day = children[_days(children["charge_date"]) == np.datetime64(day.date(), "D")]
        if len(on_day):
            meters = on_day.sort_values("cost", kind="stable").groupby("child")["meter"].last().to_dict()
    expected = _expected_on_the_day(matrix, params)
    for child, x, exp in zip(names, matrix, expected, strict=True):
        if not np.isfinite(x[-1]):
            continue  # the metric is not available for this child on the day: it explains nothing
        actual = float(x[-1])
        item = {
            "dimension": child_name,
            "value": child,
            "expected": round(float(exp), 4),
            "actual": round(actual, 4),
            "delta": round(actual - float(exp), 4),
        }
        if child in meters:
            item["meter"] = str(meters[child])
        out.append(item)
    sign = 1.0 if float(anomaly["impact"]) >= 0 else -1.0
    out.sort(key=lambda c: -sign * c["delta"])
    return [c for c in out if sign * c["delta"] > 0][:top]


def refine_kind(kind: str, contributors_list: list[dict], impact: float) -> str:
    """A spike or shift driven mostly by children that cost nothing before is new cost."""
    if impact <= 0 or not contributors_list or kind == "new_cost":
        return kind
    new = sum(c["delta"] for c in contributors_list if abs(c["expected"]) < 1e-9)
    return "new_cost" if new >= 0.5 * impact else kind


def suppressed_by_feedback(anomalies: pd.DataFrame, feedback: pd.DataFrame, *, default_days: int) -> pd.Series:
    """Feedback id that suppresses each anomaly (NaN when none): an 'expected' verdict on the same level, member,
    currency and kind covers anomalies from the marked day up to suppress_until (or default_days), unless the new
    one is > 2x the size. A verdict whose currency is unknown (`marked_currency` null or absent) covers every
    currency of the member, as before analytics split series by currency."""
    out = pd.Series(np.nan, index=anomalies.index)
    if anomalies.empty or feedback.empty:
        return out
    fb = feedback[feedback["verdict"] == "expected"]
    marked_currency = fb["marked_currency"] if "marked_currency" in fb.columns else pd.Series(None, index=fb.index)
    for idx, a in anomalies.iterrows():
        same = fb[(fb["level"] == a["level"]) & (fb["dimension_value"] == a["member"])]
        same = same[same["kind"].isna() | (same["kind"] == a["kind"])]
        if "currency" in anomalies.columns:
            # The size test compares impacts, which only means something within one currency.
            mc = marked_currency.loc[same.index]
            same = same[mc.isna() | (mc == a["currency"])]
        day = pd.Timestamp(a["charge_date"])
        for f in same.itertuples():
            marked = pd.Timestamp(f.marked_date)
            until = (
                pd.Timestamp(f.suppress_until) if pd.notna(f.suppress_until) else marked + timedelta(days=default_days)
            )
            size_ok = pd.isna(f.marked_impact) or abs(a["impact"]) <= 2 * abs(float(f.marked_impact))
            if marked <= day <= until and size_ok:
                out[idx] = f.feedback_id
                break
    return out


def contributors_json(items: list[dict]) -> str:
    return json.dumps(items, separators=(",", ":"))
