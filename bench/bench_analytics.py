"""Evaluation of anomaly detection and forecasts on the labelled synthetic estate: P/R/F1 per level, delay, MAPE, coverage."""

from __future__ import annotations

import calendar
import logging
import time

import numpy as np
import pandas as pd

from backend.analytics.analyze import series_anomalies
from backend.analytics.detect import DetectorParams
from backend.analytics.evaluation import estate_cost_frame, score_detection, truth_members
from backend.analytics.forecast import ForecastParams, month_end_forecast
from backend.analytics.series import level_series
from backend.sources.synthetic import generate_estate
from bench.common import BenchResult

log = logging.getLogger("bench.analytics")

LEVELS = ["service", "resource_group", "subscription", "tag:team"]
# Peers' methods for comparison: OptScale's "today > N-day mean x (1 + t%)" and a fixed-interval z-score on 60 days.
DETECTORS = {
    "seasonal_median (default)": DetectorParams(),
    "seasonal_median k=3": DetectorParams(sensitivity=3.0),
    "seasonal_median k=5": DetectorParams(sensitivity=5.0),
    "seasonal_median min_rel=0.1": DetectorParams(min_relative_impact=0.1),
    "rolling_mean_pct 30%": DetectorParams(
        method="rolling_mean_pct", history_days=28, monthly_recurrence=False, min_relative_impact=0.0
    ),
    "zscore k=3 (63 d)": DetectorParams(
        method="zscore", sensitivity=3.0, history_days=63, monthly_recurrence=False, min_relative_impact=0.0
    ),
}


def detection_rows(seed: int, metrics: list[str], detectors: dict[str, DetectorParams]) -> list[dict]:
    estate = generate_estate(seed=seed)
    costs = estate_cost_frame(estate.costs)
    labels = estate.labels.to_pandas()
    series = level_series(costs, LEVELS, metrics)
    start, end = costs["charge_date"].min(), costs["charge_date"].max()
    since = start + pd.Timedelta(days=60)
    rows = []
    for name, params in detectors.items():
        t0 = time.perf_counter()
        found = pd.concat(
            [
                series_anomalies(g, params, start=start, end=end, since=since)
                for _, g in series.groupby(["level", "member", "metric"], sort=False)
            ],
            ignore_index=True,
        )
        seconds = time.perf_counter() - t0
        for metric in metrics:
            for level in LEVELS:
                alerts = found[(found["level"] == level) & (found["metric"] == metric)]
                score = score_detection(alerts, truth_members(labels, costs, level))
                rows.append(
                    {
                        "part": "detection",
                        "seed": seed,
                        "detector": name,
                        "metric": metric,
                        "level": level,
                        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in score.items()},
                        "seconds": round(seconds, 1),
                    }
                )
    return rows, costs, series


def forecast_rows(seed: int, series: pd.DataFrame, *, step: int, scopes: list[str], metrics: list[str]) -> list[dict]:
    params = ForecastParams()
    out = []
    subs = series[series["level"] == "subscription"]
    for metric in metrics:
        mine = subs[subs["metric"] == metric]
        targets = {"total": mine.groupby("charge_date")["cost"].sum()}
        if "subscription" in scopes:
            for member, g in mine.groupby("member"):
                targets[f"subscription {member[-8:]}"] = g.set_index("charge_date")["cost"]
        for scope, ser in targets.items():
            dates, values = ser.index.to_numpy(), ser.to_numpy()
            first = pd.Timestamp(dates[0]) + pd.DateOffset(months=3)
            for month in pd.date_range(first.replace(day=1), pd.Timestamp(dates[-1]), freq="MS"):
                dim = calendar.monthrange(month.year, month.month)[1]
                in_month = (dates >= month.to_datetime64()) & (
                    dates < (month + pd.DateOffset(months=1)).to_datetime64()
                )
                if in_month.sum() < dim:
                    continue
                total = float(values[in_month].sum())
                for day in range(1, dim, step):
                    cut = np.searchsorted(dates, (month + pd.Timedelta(days=day - 1)).to_datetime64(), side="right")
                    r = month_end_forecast(dates[:cut], values[:cut], params)
                    out.append(
                        {
                            "seed": seed,
                            "metric": metric,
                            "scope": scope,
                            "month": month.strftime("%Y-%m"),
                            "day": day,
                            "ape": abs(r["point"] - total) / total,
                            "covered": r["lower"] <= total <= r["upper"],
                            "method": r["method"],
                        }
                    )
    return out


def main(quick: bool = False) -> None:
    result = BenchResult(
        "analytics",
        "Anomaly detection (precision/recall/F1 per level, detection delay) against the synthetic estate's labels, "
        "and end-of-month forecast MAPE / 95% interval coverage by day of month.",
    )
    seeds = [42] if quick else [42, 7, 123]
    detectors = {k: v for k, v in DETECTORS.items() if not quick or "default" in k}
    for seed in seeds:
        rows, _, series = detection_rows(
            seed,
            ["amortized", "actual"],
            detectors if seed == 42 else {k: v for k, v in detectors.items() if "default" in k},
        )
        result.rows += rows
        if seed == 42:
            fc = pd.DataFrame(
                forecast_rows(
                    seed,
                    series,
                    step=3 if quick else 1,
                    scopes=["total"] if quick else ["total", "subscription"],
                    metrics=["amortized"] if quick else ["amortized", "actual"],
                )
            )
    for r in result.rows:
        if r["detector"].endswith("(default)") or r["seed"] == 42:
            log.info(
                "seed %s %-28s %-9s %-14s P=%.2f R=%.2f F1=%.2f events=%s false=%s delay mean=%s max=%s",
                r["seed"],
                r["detector"],
                r["metric"],
                r["level"],
                r["precision"],
                r["recall"],
                r["f1"],
                r["events"],
                r["false_events"],
                r["mean_delay_days"],
                r["max_delay_days"],
            )
    fc["bucket"] = pd.cut(fc["day"], [0, 7, 14, 21, 31], labels=["1-7", "8-14", "15-21", "22-31"])
    by = fc.groupby(["metric", "bucket"], observed=True).agg(
        mape=("ape", "mean"),
        p90_ape=("ape", lambda a: a.quantile(0.9)),
        coverage=("covered", "mean"),
        n=("ape", "size"),
    )
    for (metric, bucket), r in by.iterrows():
        result.rows.append(
            {
                "part": "forecast",
                "metric": metric,
                "day_of_month": str(bucket),
                "mape": round(r.mape, 4),
                "p90_ape": round(r.p90_ape, 4),
                "coverage": round(r.coverage, 3),
                "n": int(r.n),
            }
        )
        log.info(
            "forecast %-9s days %-6s MAPE=%.2f%% p90 APE=%.2f%% coverage=%.1f%% (n=%d)",
            metric,
            bucket,
            100 * r.mape,
            100 * r.p90_ape,
            100 * r.coverage,
            r.n,
        )
    late = fc[fc["day"] >= 15]
    for metric, g in late.groupby("metric"):
        log.info(
            "forecast %s from day 15: MAPE=%.2f%% coverage=%.1f%% methods=%s",
            metric,
            100 * g.ape.mean(),
            100 * g.covered.mean(),
            g.method.value_counts().to_dict(),
        )
        result.notes.append(
            f"{metric} from day 15: MAPE {100 * g.ape.mean():.2f}%, 95% interval coverage "
            f"{100 * g.covered.mean():.1f}% (n={len(g)}); methods {g.method.value_counts().to_dict()}"
        )
    result.write()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
