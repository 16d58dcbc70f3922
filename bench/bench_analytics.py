"""Evaluation of anomaly detection and forecasts on the labelled synthetic estate: P/R/F1 per level, delay, MAPE, coverage."""

from __future__ import annotations

import calendar
import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from backend.analytics import forecast
from backend.analytics.analyze import SERIES_KEYS, series_anomalies
from backend.analytics.detect import DetectorParams
from backend.analytics.forecast import ForecastParams, forecast_series, month_end_forecast
from backend.analytics.series import level_series
from backend.demo.estate import generate_estate
from bench.analytics_evaluation import estate_cost_frame, label_scope, score_detection, truth_members
from bench.common import BenchResult

log = logging.getLogger("bench.analytics")

LEVELS = ["service", "resource_group", "subscription", "tag:team"]
SEEDS = [42, 7, 1234]
# Seeds never looked at while choosing the defaults: the default detector only, reported apart from the pooled rows.
HOLDOUT_SEEDS = [2024, 99]
GOAL_LEVELS = ("service", "resource_group")  # issue 7: precision and recall >= 0.9 here, detected by the next day
# Peers' methods for comparison: OptScale's "today > N-day mean x (1 + t%)" and a fixed-interval z-score on 60 days.
DETECTORS = {
    "seasonal_median (default)": DetectorParams(),
    "seasonal_median k=4": DetectorParams(sensitivity=4.0),
    "seasonal_median k=5": DetectorParams(sensitivity=5.0),
    "seasonal_median min_rel=0.25": DetectorParams(min_relative_impact=0.25),
    "seasonal_median no shift re-anchor": DetectorParams(reanchor_shifts=False),
    "rolling_mean_pct 30%": DetectorParams(
        method="rolling_mean_pct",
        history_days=28,
        monthly_recurrence=False,
        min_relative_impact=0.0,
        reanchor_shifts=False,
    ),
    "zscore k=3 (63 d)": DetectorParams(
        method="zscore",
        sensitivity=3.0,
        history_days=63,
        monthly_recurrence=False,
        min_relative_impact=0.0,
        reanchor_shifts=False,
    ),
}
COUNTS = ("labels", "events", "false_events", "missed")


def level_truths(costs: pd.DataFrame, labels: pd.DataFrame, series: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per level, the labels mapped to the member they move, with the ones sized for that level in scope."""
    truths = {}
    for level in LEVELS:
        truth = truth_members(labels, costs, level)
        # Scoped on amortized cost, the cost the estate sizes its labels by, so both metrics share one label set.
        mine = series[(series["level"] == level) & (series["metric"] == "amortized")]
        truth["in_scope"] = label_scope(truth, mine)
        truths[level] = truth
    return truths


def detection_rows(seed: int, metrics: list[str], detectors: dict[str, DetectorParams]):
    """Scores of every detector on one seed's estate, per metric and level; also returns the cost frame and series."""
    estate = generate_estate(seed=seed)
    costs = estate_cost_frame(estate.costs)
    labels = estate.labels.to_pandas()
    series = level_series(costs, LEVELS, metrics)
    start, end = costs["charge_date"].min(), costs["charge_date"].max()
    since = start + pd.Timedelta(days=60)
    truths = level_truths(costs, labels, series)
    rows = []
    for name, params in detectors.items():
        t0 = time.perf_counter()
        found = pd.concat(
            [
                series_anomalies(g, params, start=start, end=end, since=since)
                for _, g in series.groupby(SERIES_KEYS, sort=False)
            ],
            ignore_index=True,
        )
        seconds = time.perf_counter() - t0
        for metric in metrics:
            for level in LEVELS:
                alerts = found[(found["level"] == level) & (found["metric"] == metric)]
                score = score_detection(alerts, truths[level])
                rows.append(
                    {
                        "part": "detection",
                        "seed": seed,
                        "detector": name,
                        "metric": metric,
                        "level": level,
                        "labels_total": len(truths[level]),
                        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in score.items()},
                        "seconds": round(seconds, 1),
                    }
                )
    return rows, costs, series, labels


def pooled_detection(rows: list[dict]) -> list[dict]:
    """Per detector, metric and level: counts summed over the seeds, precision and recall from the sums."""
    frame = pd.DataFrame(rows)
    out = []
    for (name, metric, level), g in frame.groupby(["detector", "metric", "level"], sort=False):
        sums = {k: int(g[k].sum()) for k in COUNTS}
        precision = 1 - sums["false_events"] / sums["events"] if sums["events"] else 1.0
        recall = 1 - sums["missed"] / sums["labels"] if sums["labels"] else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(
            {
                "part": "detection pooled",
                "seed": "+".join(str(s) for s in g["seed"]),
                "detector": name,
                "metric": metric,
                "level": level,
                "labels_total": int(g["labels_total"].sum()),
                **sums,
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "f1": round(f1, 3),
                "max_delay_days": g["max_delay_days"].max(),
                "goal_met": bool(level not in GOAL_LEVELS or (precision >= 0.9 and recall >= 0.9)),
            }
        )
    return out


def forecast_rows(
    seed: int, series: pd.DataFrame, labels: pd.DataFrame, *, step: int, scopes: list[str], metrics: list[str]
) -> list[dict]:
    """End-of-month forecasts made on day 1, 1 + step, ... of every full month after three months of history.

    `surprise` marks forecasts whose scope has a labelled anomaly starting later in the month: no forecast can
    see it coming, so coverage is reported with and without them."""
    params = ForecastParams()
    starts = pd.to_datetime(labels["start_date"])
    out = []
    subs = series[series["level"] == "subscription"]
    # The total below adds subscriptions up, which is only a total within one currency.
    if subs["currency"].nunique() > 1:
        raise ValueError(f"forecast_rows scores a one-currency estate, not {sorted(subs['currency'].unique())}")
    for metric in metrics:
        mine = subs[subs["metric"] == metric]
        targets = {"total": mine.groupby("charge_date")["cost"].sum()}
        owners = {"total": np.ones(len(labels), dtype=bool)}
        if "subscription" in scopes:
            for member, g in mine.groupby("member"):
                targets[f"subscription {member[-8:]}"] = g.set_index("charge_date")["cost"]
                owners[f"subscription {member[-8:]}"] = (labels["subscription_id"] == member).to_numpy()
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
                    later = (starts > month + pd.Timedelta(days=day - 1)) & (starts < month + pd.DateOffset(months=1))
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
                            "surprise": bool((later.to_numpy() & owners[scope]).any()),
                        }
                    )
    return out


def forecast_speed(series: pd.DataFrame) -> dict:
    """Seconds to forecast every series of an estate (as run_analytics does) with the batched backtests, and with
    the same backtests fitted one origin at a time (the reference), in this run."""
    params = ForecastParams()
    groups = [g for _, g in series.groupby(SERIES_KEYS, sort=False)]

    def run() -> float:
        t0 = time.perf_counter()
        for g in groups:
            forecast_series(g["charge_date"].to_numpy(), g["cost"].to_numpy(), params)
        return time.perf_counter() - t0

    batched = run()
    batch = forecast.predict_origins

    def one_at_a_time(method, values, origins, horizon, p):
        return np.vstack(
            [batch(method, values, np.array([o]), horizon, p) for o in origins] or [np.zeros((0, horizon))]
        )

    with mock.patch.object(forecast, "predict_origins", one_at_a_time):
        reference = run()
    return {"series": len(groups), "batched_s": batched, "reference_s": reference}


def forecast_summary(fc: pd.DataFrame) -> list[dict]:
    """MAPE and interval coverage by day-of-month bucket (pooled over seeds), and from day 15 per seed and pooled."""
    fc = fc.assign(bucket=pd.cut(fc["day"], [0, 7, 14, 21, 31], labels=["1-7", "8-14", "15-21", "22-31"]))
    rows = []

    def row(g: pd.DataFrame, **keys) -> dict:
        return {
            "part": "forecast",
            **keys,
            "mape": round(float(g["ape"].mean()), 4),
            "p90_ape": round(float(g["ape"].quantile(0.9)), 4),
            "coverage": round(float(g["covered"].mean()), 3),
            "n": len(g),
            "coverage_no_surprise": round(float(g.loc[~g["surprise"], "covered"].mean()), 3),
            "n_no_surprise": int((~g["surprise"]).sum()),
        }

    for (metric, bucket), g in fc.groupby(["metric", "bucket"], observed=True):
        rows.append(row(g, seed="pooled", metric=metric, day_of_month=str(bucket)))
    late = fc[fc["day"] >= 15]
    for (seed, metric), g in late.groupby(["seed", "metric"]):
        rows.append(row(g, seed=seed, metric=metric, day_of_month=">=15"))
    for metric, g in late.groupby("metric"):
        rows.append(row(g, seed="pooled", metric=metric, day_of_month=">=15"))
    rows.append(row(late, seed="pooled", metric="both", day_of_month=">=15"))
    return rows


def main(quick: bool = False) -> None:
    result = BenchResult(
        "analytics",
        "Anomaly detection (precision/recall/F1 per level, detection delay) against the synthetic estate's labels "
        "over several seeds, end-of-month forecast MAPE / 95% interval coverage by day of month, and the seconds "
        "the forecasts of one default estate take. Recall counts the labels sized for a level (>= 40% of the "
        "member's prior 28-day mean; all labels at service and resource group level); any event overlapping a "
        "label is a true one.",
    )
    load_before = os.getloadavg()
    seeds = [42] if quick else SEEDS
    detectors = {k: v for k, v in DETECTORS.items() if not quick or "default" in k}
    per_seed, forecasts, speed = [], [], None
    for seed in seeds:
        rows, _, series, labels = detection_rows(seed, ["amortized", "actual"], detectors)
        per_seed += rows
        if speed is None:
            speed = forecast_speed(series[series["level"].isin(LEVELS)])
        forecasts += forecast_rows(
            seed,
            series,
            labels,
            step=3 if quick else 1,
            scopes=["total"] if quick else ["total", "subscription"],
            metrics=["amortized"] if quick else ["amortized", "actual"],
        )
    holdout = []
    for seed in [] if quick else HOLDOUT_SEEDS:
        rows = detection_rows(seed, ["amortized", "actual"], {k: v for k, v in DETECTORS.items() if "default" in k})[0]
        holdout += [{**r, "part": "detection holdout"} for r in rows]
    pooled = pooled_detection(per_seed)
    for r in pooled:
        if r["detector"].endswith("(default)") or r["level"] in GOAL_LEVELS:
            log.info(
                "pooled %-36s %-9s %-14s P=%.3f R=%.3f events=%s false=%s missed=%s/%s goal=%s",
                r["detector"],
                r["metric"],
                r["level"],
                r["precision"],
                r["recall"],
                r["events"],
                r["false_events"],
                r["missed"],
                r["labels"],
                r["goal_met"],
            )
    fc_rows = forecast_summary(pd.DataFrame(forecasts))
    for r in fc_rows:
        log.info(
            "forecast seed %-6s %-9s days %-6s MAPE=%.2f%% p90 APE=%.2f%% coverage=%.1f%% (n=%d), without "
            "surprises %.1f%% (n=%d)",
            r["seed"],
            r["metric"],
            r["day_of_month"],
            100 * r["mape"],
            100 * r["p90_ape"],
            100 * r["coverage"],
            r["n"],
            100 * r["coverage_no_surprise"],
            r["n_no_surprise"],
        )
    speed_row = {
        "part": "forecast speed",
        "seed": seeds[0],
        "n": speed["series"],
        "seconds": round(speed["batched_s"], 1),
        "reference_seconds": round(speed["reference_s"], 1),
        "ratio_to_reference": round(speed["batched_s"] / speed["reference_s"], 3),
    }
    result.rows = pooled + per_seed + holdout + fc_rows + [speed_row]
    fc = pd.DataFrame(forecasts)
    late = fc[fc["day"] >= 15]
    result.notes += [
        f"seeds {seeds}; goal levels {list(GOAL_LEVELS)} met by the default detector on every seed and metric: "
        + str(
            all(
                r["precision"] >= 0.9 and r["recall"] >= 0.9 and (r["max_delay_days"] or 0) <= 1
                for r in per_seed
                if r["detector"].endswith("(default)") and r["level"] in GOAL_LEVELS
            )
        ),
        f"forecast from day 15, pooled: MAPE {100 * late['ape'].mean():.2f}%, 95% interval coverage "
        f"{100 * late['covered'].mean():.1f}% (n={len(late)}); {100 * late.loc[~late['surprise'], 'covered'].mean():.1f}% "
        "without the forecasts whose scope has a labelled anomaly starting later in the month; methods "
        f"{late['method'].value_counts().to_dict()}",
        f"forecasts of all {speed['series']} series of the seed-{seeds[0]} estate: {speed['batched_s']:.1f} s batched "
        f"vs {speed['reference_s']:.1f} s fitting one backtest origin at a time (ratio "
        f"{speed['batched_s'] / speed['reference_s']:.3f}, same run)",
        f"load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end (2 shared cores)",
    ]
    _keep_first_run_section(result.write)


FIRST_RUN_MARK = "## First run through the analytics step"
FIRST_RUN_SEEDS = [42, 7, 1234]


def first_run(seed: int, rows: int, work: Path, *, score: bool = True) -> list[dict]:
    """The analytics step as the app runs it (Spark, the embedded mart, default settings) on a fresh mart over
    a 13-month estate's gold: the first run over all but its last day, then the last day (an increment), then
    the same gold again; precision and recall of what the first two runs left in the mart."""
    import sqlalchemy as sa

    from backend.analytics.run import run_analytics
    from backend.config import Settings
    from backend.lake import lake_from_settings
    from backend.lake.catalog import GOLD_COST_DAILY, GOLD_RESOURCE_TAGS
    from backend.lake.storage import ensure_lake, lake_location
    from backend.runtime.spark import get_spark
    from bench.analytics_evaluation import estate_gold
    from bench.common import scratch_postgres

    estate = generate_estate(seed=seed, target_rows=rows)
    gold = estate_gold(estate.costs, tag_keys=("team",))
    server, url = scratch_postgres(work)
    try:
        settings = Settings(
            _env_file=None, app_env="test", data_dir=work, database_url=url, lake_uri=str(work / "lake")
        )
        ensure_lake(lake_location(settings))
        lake, spark = lake_from_settings(settings), get_spark(settings)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        daily = gold[GOLD_COST_DAILY.name]
        last = max(estate.days)
        out = []
        steps = [("first run", last - timedelta(days=1)), ("increment 1 day", None), ("no new data", None)]
        for name, upto in steps:
            for table, data in gold.items():
                if table != GOLD_RESOURCE_TAGS.name and upto is not None:
                    data = data.filter(pc.less_equal(data["charge_date"], pa.scalar(upto, pa.date32())))
                lake.overwrite(table, data, partition_by=None if table == GOLD_RESOURCE_TAGS.name else ["charge_month"])
            t0 = time.perf_counter()
            stats = run_analytics(settings, lake, spark, engine, run_id=f"bench-{name}")
            seconds = time.perf_counter() - t0
            out.append(
                {
                    "part": "first run",
                    "seed": seed,
                    "scenario": name,
                    "target_rows": rows,
                    "gold_rows": daily.num_rows if upto is None else None,
                    "days_scored": stats["days_scored"],
                    "days_new": stats["days_new"],
                    "anomalies": stats["anomalies"],
                    "seconds": round(seconds, 1),
                    "anomaly_seconds": stats["anomaly_seconds"],
                }
            )
            log.info("first-run bench seed %s %s: %s", seed, name, out[-1])
        if score:
            with engine.connect() as conn:
                found = pd.read_sql_query(
                    sa.text("SELECT level, dimension_value AS member, metric, charge_date FROM mart.anomalies"), conn
                )
            costs = estate_cost_frame(estate.costs)
            truths = level_truths(costs, estate.labels.to_pandas(), level_series(costs, LEVELS, ["amortized"]))
            for metric in ("amortized", "actual"):
                for level in LEVELS:
                    alerts = found[(found["level"] == level) & (found["metric"] == metric)]
                    sc = score_detection(alerts, truths[level])
                    out.append(
                        {
                            "part": "first run detection",
                            "seed": seed,
                            "target_rows": rows,
                            "metric": metric,
                            "level": level,
                            **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in sc.items()},
                        }
                    )
        engine.dispose()
        return out
    finally:
        server.cleanup()


def first_run_main(seeds: list[int], rows: int, scale_rows: int | None) -> None:
    """Run the first-run path and write its section into analytics.md / .json, keeping the other sections."""
    import tempfile

    from backend.runtime.spark import stop_spark
    from bench.common import RESULTS_DIR, machine

    load_before = os.getloadavg()
    out = []
    try:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="bench-first-run-") as work:
                out += first_run(seed, rows, Path(work))
        if scale_rows:
            with tempfile.TemporaryDirectory(prefix="bench-first-run-") as work:
                out += first_run(seeds[0], scale_rows, Path(work), score=False)
    finally:
        stop_spark()
    pooled = []
    detection = pd.DataFrame([r for r in out if r["part"] == "first run detection"])
    for (metric, level), g in detection.groupby(["metric", "level"], sort=False):
        sums = {k: int(g[k].sum()) for k in COUNTS}
        precision = 1 - sums["false_events"] / sums["events"] if sums["events"] else 1.0
        recall = 1 - sums["missed"] / sums["labels"] if sums["labels"] else 1.0
        pooled.append(
            {"part": "first run pooled", "seed": "+".join(map(str, seeds)), "target_rows": rows, "metric": metric}
            | {"level": level, **sums, "precision": round(precision, 3), "recall": round(recall, 3)}
        )
    command = "python -m bench.bench_analytics --first-run " + " ".join(
        [f"--seeds {','.join(map(str, seeds))}", f"--rows {rows}"]
        + ([f"--scale-rows {scale_rows}"] if scale_rows else [])
    )
    notes = [
        f"command: `{command}`; machine {machine()['cores']} cores (shared), load average {load_before[0]:.1f} at "
        f"start, {os.getloadavg()[0]:.1f} at end",
        "backend.analytics.run.run_analytics on a fresh embedded mart with default settings (levels subscription, "
        "resource_group, service, tag:team; metrics actual and amortized; default detector), embedded Sail; gold "
        "written from the estate by bench.analytics_evaluation.estate_gold (cost_daily, cost_by_tag, "
        "resource_tags), not by the medallion jobs",
        "scenarios: the first run over every day but the last, the last day appended (increment), the same gold "
        "again; seconds is the whole step (forecasts included, which read the whole history every run), "
        "anomaly_seconds the detection, contributors, feedback and mart write of the days scored",
        "detection rows: what the first run and the increment left in mart.anomalies, against the estate's labels "
        "(detected by the day after a label starts; recall over the labels sized for the level, as above)",
    ]
    rows_out = pooled + out
    headers = list(dict.fromkeys(k for r in rows_out for k in r))
    section = [FIRST_RUN_MARK, "", *notes_md(notes), "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    section += ["| " + " | ".join(_cell(r.get(h)) for h in headers) + " |" for r in rows_out]
    md_path = RESULTS_DIR / "analytics.md"
    kept = md_path.read_text().split(FIRST_RUN_MARK)[0].rstrip() if md_path.exists() else "# analytics"
    md_path.write_text(kept + "\n\n" + "\n".join(section) + "\n")
    json_path = RESULTS_DIR / "analytics.json"
    payload = json.loads(json_path.read_text()) if json_path.exists() else {"name": "analytics"}
    payload["first_run"] = {"command": command, "machine": machine(), "rows": rows_out, "notes": notes}
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log.info("wrote the first-run section of %s", md_path)


def notes_md(notes: list[str]) -> list[str]:
    return [f"- {n}" for n in notes]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    return "" if value is None else str(value)


def _keep_first_run_section(write) -> None:
    """Rewrite analytics.md / .json with `write` (the pooled bench), keeping the first-run section."""
    from bench.common import RESULTS_DIR

    md_path, json_path = RESULTS_DIR / "analytics.md", RESULTS_DIR / "analytics.json"
    section = md_path.read_text().partition(FIRST_RUN_MARK) if md_path.exists() else ("", "", "")
    first = json.loads(json_path.read_text()).get("first_run") if json_path.exists() else None
    write()
    if section[1]:
        md_path.write_text(md_path.read_text().rstrip() + "\n\n" + section[1] + section[2])
    if first is not None:
        payload = json.loads(json_path.read_text())
        payload["first_run"] = first
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m bench.bench_analytics")
    parser.add_argument("--first-run", action="store_true", help="the analytics step's first-run path only")
    parser.add_argument("--seeds", default=",".join(map(str, FIRST_RUN_SEEDS)))
    parser.add_argument("--rows", type=int, default=150_000, help="estate rows (150k: the demo's)")
    parser.add_argument("--scale-rows", type=int, default=None, help="also time one larger estate (no scoring)")
    args = parser.parse_args()
    if args.first_run:
        first_run_main([int(s) for s in args.seeds.split(",")], args.rows, args.scale_rows)
    else:
        main()
