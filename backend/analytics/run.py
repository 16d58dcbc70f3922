"""Entry point after gold: anomalies and forecasts per level and currency with Spark (grouped pandas UDFs), to the mart."""

from __future__ import annotations

import logging
import operator
import time
from datetime import date, timedelta
from functools import reduce

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from backend.analytics import anomaly_settings, scoring
from backend.analytics.analyze import (
    ANOMALY_COLUMNS,
    ANOMALY_SPARK_SCHEMA,
    FORECAST_SPARK_SCHEMA,
    SERIES_KEYS,
    contributors,
    contributors_json,
    refine_kind,
    series_anomalies,
    series_forecasts,
    suppressed_by_feedback,
)
from backend.analytics.detect import DetectorParams
from backend.analytics.forecast import ForecastParams
from backend.analytics.series import CHILD_COLUMN, LEVEL_COLUMN, METRICS, TAG_PREFIX, TOTAL
from backend.config import Settings
from backend.lake.catalog import GOLD_COST_BY_TAG, GOLD_COST_DAILY, GOLD_RESOURCE_TAGS
from backend.mart import analytics_store

log = logging.getLogger(__name__)

COST_COLUMNS = [
    "charge_date",
    "subscription_id",
    "resource_group",
    "service_name",
    "resource_id",
    "meter_name",
    "billing_currency",
    "actual_cost",
    "amortized_cost",
]


def detector_params(settings: Settings) -> DetectorParams:
    return DetectorParams(
        history_days=settings.anomaly_history_days,
        sensitivity=settings.anomaly_sensitivity,
        min_cost_impact=settings.anomaly_min_cost_impact,
        min_relative_impact=settings.anomaly_min_relative_impact,
    )


def forecast_params(settings: Settings) -> ForecastParams:
    return ForecastParams(horizon_days=settings.forecast_horizon_days, interval_level=settings.forecast_interval_level)


def _money_as_double(table: pa.Table) -> pa.Table:
    # Decimal(28,12) sums are exact in the mart; the statistics need floats, and 1e-12 precision is irrelevant.
    for name in ("actual_cost", "amortized_cost"):
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, pc.cast(table[name], pa.float64()))
    return table


def _gold_frame(spark, lake, table: str, schema: pa.Schema, columns: list[str], as_of: date | None):
    """A gold table as the engine reads it (the driver never holds the whole table); money as double."""
    from pyspark.sql import functions as sf

    from backend.lake import engine

    frame = engine.read(spark, lake, table, pa.schema([schema.field(c) for c in columns]))
    for name in ("actual_cost", "amortized_cost"):
        frame = frame.withColumn(name, sf.col(name).cast("double"))
    if as_of is not None:
        frame = frame.where(sf.col("charge_date") <= sf.lit(as_of))
    return frame


def _complete_sum(col: str):
    """The sum, or null when a row lacks the metric: a day's total over rows where it is not available is not
    that day's cost (gold and the mart say "not available" alike), and the UDFs skip such days."""
    from pyspark.sql import functions as sf

    return sf.when(sf.count(sf.lit(1)) == sf.count(sf.col(col)), sf.sum(sf.col(col)))


def level_series_spark(cost_df, tag_df, levels: list[str], metrics: list[str]):
    """Spark DataFrame (level, member, metric, currency, charge_date, cost): daily totals per level member, billing
    currency and metric. Currency is a grouping key, never summed over: a member billed in USD and EUR is two
    series (an unknown currency is the series ""). The cost is null on a day a row of the member lacks the
    metric (not available there)."""
    from pyspark.sql import functions as sf

    currency = sf.coalesce(sf.col("billing_currency"), sf.lit("")).alias("currency")
    parts = []
    for level in [*levels, TOTAL]:
        if level == TOTAL:
            src, member = cost_df, sf.lit("")
        elif level in LEVEL_COLUMN:
            src, member = cost_df, sf.coalesce(sf.col(LEVEL_COLUMN[level]), sf.lit(""))
        elif level.startswith(TAG_PREFIX) and tag_df is not None:
            src = tag_df.where(sf.col("tag_key") == level[len(TAG_PREFIX) :])
            member = sf.col("tag_value")
        else:
            log.warning("analysis level %s skipped (no data for it)", level)
            continue
        for metric in metrics:
            parts.append(
                src.groupBy(member.alias("member"), currency, sf.col("charge_date"))
                .agg(_complete_sum(METRICS[metric]).alias("cost"))
                .select(
                    sf.lit(level).alias("level"),
                    "member",
                    sf.lit(metric).alias("metric"),
                    "currency",
                    "charge_date",
                    "cost",
                )
            )
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


# Modulus of the per-row hashes summed into a day's content fingerprint: a prime below 2**31, so a day's sum of
# millions of rows stays far inside a long.
_HASH_MODULUS = 2_147_483_647


def metric_coverage(cost_df, metrics: list[str]) -> list[dict]:
    """Per billing currency and day of gold: its rows, how many carry each metric, and `content`, the sum of a
    hash of each row's analysed columns (order-independent: a re-rated or re-imported day changes it). Small:
    currencies x days."""
    from pyspark.sql import functions as sf

    currency = sf.coalesce(sf.col("billing_currency"), sf.lit("")).alias("currency")
    counts = [sf.count(sf.col(METRICS[m])).alias(m) for m in metrics]
    hashed = sf.xxhash64(*[sf.col(c) for c in COST_COLUMNS if c not in ("charge_date", "billing_currency")])
    content = sf.sum(sf.pmod(hashed, sf.lit(_HASH_MODULUS))).alias("content")
    rows = sf.count(sf.lit(1)).alias("rows")
    return [row.asDict() for row in cost_df.groupBy(currency, "charge_date").agg(rows, content, *counts).collect()]


def unavailable_days(coverage: list[dict], metrics: list[str]) -> tuple[dict[tuple[str, str], frozenset], list[str]]:
    """The days each (metric, currency) is not available (the currency has rows that day, none carrying the
    metric; e.g. only an ActualCost export covers it), and which metrics no row carries in a currency at all:
    "amortized" when in none, "amortized EUR" when in that currency only."""
    off: dict[tuple[str, str], frozenset] = {}
    missing = []
    currencies = sorted({r["currency"] for r in coverage})
    for metric in metrics:
        lacking = []
        for cur in currencies:
            days = [r for r in coverage if r["currency"] == cur]
            absent = frozenset(r["charge_date"] for r in days if not r[metric])
            if absent:
                off[(metric, cur)] = absent
            if len(absent) == len(days):
                lacking.append(cur)
        if len(lacking) == len(currencies):
            missing.append(metric)
        else:
            missing += [f"{metric} {cur}".rstrip() for cur in lacking]
    return off, missing


def run_analytics(
    settings: Settings, lake, spark, engine: sa.Engine, *, run_id: str, as_of: date | None = None
) -> dict:
    """Read gold cost_daily (and cost_by_tag), detect anomalies on the days not scored yet (and the recent window:
    see backend.analytics.scoring) and forecast every scope, each per billing currency; write both to the mart.
    Returns counts for the run's step record."""
    from pyspark.sql import functions as sf

    t0 = time.monotonic()
    if not lake.exists(GOLD_COST_DAILY.name):
        log.info("analytics skipped: %s does not exist yet", GOLD_COST_DAILY.name)
        return {"series": 0, "anomalies": 0, "forecast_rows": 0, "days_scored": 0}
    costs = _gold_frame(spark, lake, GOLD_COST_DAILY.name, GOLD_COST_DAILY.schema, COST_COLUMNS, as_of)
    levels, metrics = list(settings.anomaly_levels), list(settings.anomaly_metrics)
    coverage = metric_coverage(costs, metrics)
    if not coverage:
        return {"series": 0, "anomalies": 0, "forecast_rows": 0, "days_scored": 0}
    unavailable, not_available = unavailable_days(coverage, metrics)
    tags = None
    if any(lv.startswith(TAG_PREFIX) for lv in levels) and lake.exists(GOLD_COST_BY_TAG.name):
        tag_columns = ["charge_date", "tag_key", "tag_value", "billing_currency", "actual_cost", "amortized_cost"]
        tags = _gold_frame(spark, lake, GOLD_COST_BY_TAG.name, GOLD_COST_BY_TAG.schema, tag_columns, as_of)
    start, end = min(r["charge_date"] for r in coverage), max(r["charge_date"] for r in coverage)
    dparams, fparams = detector_params(settings), forecast_params(settings)
    # Sensitivity, window and minimum impact per level (the Anomalies page), the environment's where unset.
    level_params = anomaly_settings.params_by_level(settings, anomaly_settings.stored(engine), [*levels, TOTAL])
    config = scoring.config_fingerprint(levels, metrics, dparams, level_params)
    # The scoring plan and the explanations read as much history as the longest window of any level needs.
    widest = max([dparams, *level_params.values()], key=scoring.history_span)
    plan = scoring.plan_scoring(
        coverage,
        analytics_store.read_scored_days(engine),
        metrics=metrics,
        config=config,
        params=widest,
        lookback_days=settings.anomaly_lookback_days,
        end=end,
        as_of=as_of,
    )
    log.info(
        "anomalies: scoring %d (currency, day)s of %d in gold: %s", plan.counts["scored"], len(coverage), plan.counts
    )
    currencies = sorted({r["currency"] for r in coverage})
    if len(currencies) > 1:
        log.info("gold holds %d billing currencies %s: every series is per currency", len(currencies), currencies)
    if not_available:
        log.info("analytics: no gold row carries %s: those series get no anomalies and no forecast", not_available)

    def unavailable_for(pdf: pd.DataFrame) -> frozenset:
        # The days this series' metric is not available in its currency (no row carries it), for the UDFs.
        return unavailable.get((pdf["metric"].iloc[0], pdf["currency"].iloc[0]), frozenset())

    score_days, context_start = plan.days, plan.context_start

    def anomalies_of(pdf: pd.DataFrame) -> pd.DataFrame:
        cur = pdf["currency"].iloc[0]
        return series_anomalies(
            pdf,
            level_params.get(pdf["level"].iloc[0], dparams),
            start=context_start[cur],
            end=end,
            days=score_days[cur],
            unavailable=unavailable_for(pdf),
        )

    # The series are small (members x days); only they are shuffled to the grouped UDFs.
    series = (
        level_series_spark(costs, tags, levels, metrics)
        .repartition(settings.spark_shuffle_partitions, *SERIES_KEYS)
        .cache()
    )
    try:
        grouped = series.groupBy(*SERIES_KEYS)
        t_detect = time.monotonic()
        found = pd.DataFrame(columns=ANOMALY_COLUMNS)
        if score_days:
            # The detector reads each currency's series from its context start only: its cost follows the days
            # scored, not the length of the history.
            wanted = [
                (sf.col("currency") == sf.lit(cur)) & (sf.col("charge_date") >= sf.lit(context_start[cur]))
                for cur in sorted(score_days)
            ]
            found = (
                series.where(reduce(operator.or_, wanted))
                .groupBy(*SERIES_KEYS)
                .applyInPandas(anomalies_of, ANOMALY_SPARK_SCHEMA)
                .toPandas()
            )
        detect_seconds = time.monotonic() - t_detect
        forecasts = grouped.applyInPandas(
            lambda pdf: series_forecasts(pdf, fparams, start=start, end=end, unavailable=unavailable_for(pdf)),
            FORECAST_SPARK_SCHEMA,
        ).toPandas()
        # A series none of whose days carries its metric is skipped by both UDFs: counted, not scored as zeros.
        counted = (
            grouped.agg(sf.count("cost").alias("known"))
            .agg(sf.count(sf.lit(1)).alias("n"), sf.sum(sf.when(sf.col("known") == 0, 1).otherwise(0)).alias("off"))
            .first()
        )
        nseries, series_off = int(counted["n"]), int(counted["off"] or 0)
    finally:
        series.unpersist()

    t_explain = time.monotonic()
    found = found[found["level"] != TOTAL].reset_index(drop=True)
    found = explain_in_batches(found, lake, widest, as_of, with_tags=tags is not None, level_params=level_params)
    feedback = analytics_store.read_feedback(engine)
    by = suppressed_by_feedback(found, feedback, default_days=settings.anomaly_feedback_days)
    found["status"] = np.where(by.notna(), "expected", "open")
    found["feedback"] = [f"suppressed by feedback #{int(f)}" if pd.notna(f) else None for f in by]
    stats = {"series": nseries, "currencies": len(currencies), "as_of": str(end), "suppressed": int(by.notna().sum())}
    stats |= {"series_not_available": series_off, "metrics_not_available": not_available}
    stats |= {f"days_{k}": v for k, v in plan.counts.items()}
    scored = plan.scored
    stats |= {"scored_from": str(scored[0][1]) if scored else None, "scored_to": str(scored[-1][1]) if scored else None}
    stats |= analytics_store.write_anomalies(
        engine,
        found,
        scored=plan.fingerprints,
        config_fingerprint=config,
        gone=plan.gone,
        run_id=run_id,
        levels=levels,
        metrics=metrics,
    )
    stats["anomaly_seconds"] = round(detect_seconds + time.monotonic() - t_explain, 1)
    stats |= analytics_store.write_forecasts(
        engine, forecasts, run_id=run_id, interval_level=fparams.interval_level, as_of=end,
        horizon_days=fparams.horizon_days,
    )  # fmt: skip
    stats["seconds"] = round(time.monotonic() - t0, 1)
    log.info("analytics run %s: %s", run_id, stats)
    return stats


# Anomalies explained together read the gold rows of their days and the history window before them: batches of
# at most this many days keep the driver's memory flat however long the history a first run scores.
EXPLAIN_BATCH_DAYS = 28


def explain_in_batches(
    found: pd.DataFrame,
    lake,
    params: DetectorParams,
    as_of: date | None,
    *,
    with_tags: bool,
    level_params: dict[str, DetectorParams] | None = None,
) -> pd.DataFrame:
    """`explain` over anomalies grouped into runs of at most EXPLAIN_BATCH_DAYS days, each with its own gold read
    (the window of `params`, the widest; each anomaly's contributors use its level's `level_params`)."""
    resource_tags = None
    if with_tags and lake.exists(GOLD_RESOURCE_TAGS.name):
        resource_tags = lake.read_arrow(
            GOLD_RESOURCE_TAGS.name, columns=["resource_id", "tag_key", "tag_value"]
        ).to_pandas()
    if found.empty:
        rows = _explain_rows(lake, found, params, as_of, resource_tags)
        return explain(found, rows, resource_tags, params, level_params=level_params)
    days = pd.to_datetime(found["charge_date"])
    order = np.argsort(days.to_numpy(), kind="stable")
    parts, first = [], 0
    ordered = days.to_numpy()[order]
    while first < len(order):
        last = int(np.searchsorted(ordered, ordered[first] + np.timedelta64(EXPLAIN_BATCH_DAYS, "D"), side="left"))
        batch = found.iloc[order[first:last]]
        rows = _explain_rows(lake, batch, params, as_of, resource_tags)
        parts.append(explain(batch, rows, resource_tags, params, level_params=level_params))
        first = last
    return pd.concat(parts).loc[found.index]


def _explain_window(params: DetectorParams) -> timedelta:
    return timedelta(days=int(np.ceil(params.history_days / 7)) * 7)


def _explain_rows(
    lake, found: pd.DataFrame, params: DetectorParams, as_of: date | None, resource_tags: pd.DataFrame | None
) -> pa.Table:
    """The gold rows the contributor analysis can look at: the days the anomalies' history windows cover (a few
    weeks, so memory stays flat as history grows), of the members they are on only."""
    if found.empty:
        return pa.table({c: pa.array([], GOLD_COST_DAILY.schema.field(c).type) for c in COST_COLUMNS})
    first = pd.Timestamp(found["charge_date"].min()).date() - _explain_window(params)
    last = pd.Timestamp(found["charge_date"].max()).date()
    if as_of is not None:
        last = min(last, as_of)
    # A filter on the data column (not the charge_month partition, which a table may lack): Parquet
    # row-group statistics let the scan skip the rest.
    when = (pc.field("charge_date") >= pa.scalar(first, pa.date32())) & (
        pc.field("charge_date") <= pa.scalar(last, pa.date32())
    )
    members = None
    for level, group in found.groupby("level"):
        if level in LEVEL_COLUMN:
            match = pc.field(LEVEL_COLUMN[level]).isin(pa.array(sorted(set(group["member"]) - {""}), pa.string()))
            if "" in set(group["member"]):
                match = match | pc.field(LEVEL_COLUMN[level]).is_null() | (pc.field(LEVEL_COLUMN[level]) == "")
        elif resource_tags is not None and level.startswith(TAG_PREFIX):
            tagged = resource_tags[
                (resource_tags["tag_key"] == level[len(TAG_PREFIX) :])
                & resource_tags["tag_value"].isin(group["member"])
            ]
            match = pc.field("resource_id").isin(pa.array(sorted(set(tagged["resource_id"].dropna())), pa.string()))
        else:
            continue
        members = match if members is None else members | match
    if members is not None:
        when = when & members
    return _money_as_double(lake.read_arrow(GOLD_COST_DAILY.name, columns=COST_COLUMNS, filters=when))


def explain(
    found: pd.DataFrame,
    costs: pa.Table,
    resource_tags: pd.DataFrame | None,
    params: DetectorParams,
    *,
    level_params: dict[str, DetectorParams] | None = None,
) -> pd.DataFrame:
    """Top contributors one level down for each anomaly, and new_cost where new children drive it; tag-level
    anomalies are explained by their resources when `resource_tags` (gold resource_tags) is given."""
    found = found.copy()
    found["contributors"] = "[]"
    if found.empty:
        return found
    window = _explain_window(params)
    frame = costs.to_pandas()
    frame["charge_date"] = pd.to_datetime(frame["charge_date"])
    currency = frame["billing_currency"].fillna("")
    # Each level's members' row positions, found once: comparing a string column of the whole window per anomaly
    # was most of explain's time outside the contributors themselves.
    positions: dict[str, dict] = {}
    for idx, a in found.iterrows():
        day = pd.Timestamp(a["charge_date"])
        if a["level"] in LEVEL_COLUMN:
            column = LEVEL_COLUMN[a["level"]]
            if column not in positions:
                positions[column] = frame.groupby(frame[column].fillna(""), sort=False).indices
            rows = frame.iloc[positions[column].get(a["member"], np.array([], dtype=np.intp))]
            child = CHILD_COLUMN[a["level"]]
        elif resource_tags is not None:
            key = a["level"][len(TAG_PREFIX) :]
            ids = resource_tags[(resource_tags["tag_key"] == key) & (resource_tags["tag_value"] == a["member"])]
            rows = frame[frame["resource_id"].isin(ids["resource_id"])]
            child = "resource_id"
        else:
            continue
        # The anomaly's window, in its currency only: its expected and actual are amounts in that currency.
        rows = rows[
            (rows["charge_date"] >= day - window)
            & (rows["charge_date"] <= day)
            & (currency.loc[rows.index] == a["currency"]).to_numpy()
        ]
        kids = rows.rename(columns={child: "child", METRICS[a["metric"]]: "cost", "meter_name": "meter"})
        kids = (
            kids[["child", "charge_date", "cost", "meter"]]
            if child == "resource_id"
            else kids[["child", "charge_date", "cost"]]
        )
        own = (level_params or {}).get(a["level"], params)
        items = contributors(a, kids, own, child_name=child.removesuffix("_id"))
        found.at[idx, "contributors"] = contributors_json(items)
        found.at[idx, "kind"] = refine_kind(a["kind"], items, float(a["impact"]))
    return found
