"""Refining the lake: new bronze files -> silver (MERGE + quarantine) and silver -> gold for the touched months (or a full rebuild); the silver and gold steps run these."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)

from backend.lake import Lake
from backend.lake import engine as delta
from backend.lake.catalog import (
    BRONZE_COST_RECORDS,
    GOLD_COST_BY_TAG,
    GOLD_COST_CHANGES,
    GOLD_COST_DAILY,
    GOLD_MONTHLY_SUMMARY,
    GOLD_RESOURCE_TAGS,
    SILVER_COSTS,
    SILVER_FX_RATES,
    SILVER_QUARANTINE,
)
from backend.lake.engine import Scratch, sql_list
from backend.medallion import gold, silver, staging
from backend.medallion.parse import BRONZE_INPUT_COLUMNS

log = logging.getLogger(__name__)

# Silver records, atomically with its last MERGE, the bronze table version it has processed.
BRONZE_PROGRESS_APP_ID = "costlake.medallion.bronze_version"


@dataclass
class MedallionStats:
    """What one run did (the pipeline records it on its run row)."""

    run_id: str
    full_rebuild: bool = False
    bronze_version: int | None = None
    bronze_files: int = 0
    bronze_messages: int = 0  # bronze rows (Kafka messages) in scope
    source_rows: int = 0  # rows inside those payloads (+1 per undecodable message)
    valid_rows: int = 0
    quarantined: int = 0  # valid_rows + quarantined == source_rows
    quarantine_rules: dict[str, int] = field(default_factory=dict)  # first failing rule -> rows
    superseded_rows: int = 0  # valid rows of an older batch replaced by a newer pull of the same slice
    silver_upserted: int = 0
    silver_removed: int = 0  # target rows re-rated away (deleted)
    gold_rows: dict[str, int] = field(default_factory=dict)
    affected_months: list[str] = field(default_factory=list)
    # Charge days (ISO) whose silver rows this run's MERGE replaced, per month: gold recomputes only these
    # days of those months. Empty after a first load or rebuild (every day of the months is new).
    touched_days: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# --- reading -------------------------------------------------------------------------------------
def new_bronze_files(lake: Lake, processed_version: int | None, current_version: int) -> list[str]:
    """Files bronze added after `processed_version` (bronze is append-only, so new files = new rows)."""
    current = lake.file_uris(BRONZE_COST_RECORDS.name, version=current_version)
    if processed_version is None:
        return current
    seen = set(lake.file_uris(BRONZE_COST_RECORDS.name, version=processed_version))
    return [u for u in current if u not in seen]


def _months_where(column: str, months: list[str] | None) -> str | None:
    if months is None:
        return None
    return f"`{column}` IN ({sql_list(months)})" if months else "false"


def read_silver(spark: SparkSession, lake: Lake, months: list[str] | None) -> DataFrame:
    """Silver rows of the given months (all when None), partition-pruned by the engine."""
    return delta.read(spark, lake, SILVER_COSTS.name, SILVER_COSTS.schema, where=_months_where("x_ChargeMonth", months))


def _previous_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"


# --- the run -------------------------------------------------------------------------------------
def run_silver(spark: SparkSession, lake: Lake, stats: MedallionStats, *, run_id: str) -> set[str]:
    """Bronze files not yet processed -> quarantine MERGE + silver MERGE. Returns the touched months.

    The engine reads the new bronze files, decodes the payloads (Python workers), validates, and
    writes quarantine and silver; the driver only sees counts and the slice lists of the MERGE.
    """
    current = lake.version(BRONZE_COST_RECORDS.name)
    stats.bronze_version = current
    if current is None:
        log.info("no bronze table yet; nothing to do")
        return set()
    processed = None if stats.full_rebuild else lake.transaction_version(SILVER_COSTS.name, BRONZE_PROGRESS_APP_ID)
    if processed is not None and processed >= current:
        log.info("bronze version %s already processed", current)
        return set()
    uris = new_bronze_files(lake, processed, current)
    stats.bronze_files = len(uris)
    progress = (BRONZE_PROGRESS_APP_ID, current)
    if not uris:
        silver.record_progress(lake, progress, run_id=run_id)
        return set()
    t0 = time.perf_counter()
    file_schema = pa.schema([BRONZE_COST_RECORDS.schema.field(c) for c in BRONZE_INPUT_COLUMNS])
    bronze = delta.read_files(spark, uris, file_schema)
    stats.bronze_messages = bronze.count()  # a count reads no column of the files
    delta.sweep_scratch(lake)
    with Scratch(spark, lake, run_id) as area:
        # Decoded and validated once: the counts, the quarantine and the transform all read it.
        validated = area.keep(staging.validated(bronze), "validated")
        stats.seconds["silver_decode"] = round(time.perf_counter() - t0, 2)
        ok = F.size("_rules") == 0
        counts = {
            (r["ok"], r["_mode"]): r["n"]
            for r in validated.groupBy(ok.alias("ok"), "_mode").agg(F.count(F.lit(1)).alias("n")).collect()
        }
        stats.valid_rows = sum(n for (good, _), n in counts.items() if good)
        stats.quarantined = sum(n for (good, _), n in counts.items() if not good)
        stats.source_rows = stats.valid_rows + stats.quarantined
        valid_modes = sorted({mode for (good, mode), n in counts.items() if good and n})
        now = datetime.now(UTC)
        # Quarantine first: the silver progress mark says the bronze version is processed, so whatever
        # must land for that version has to be durable before it.
        if stats.quarantined:
            silver.merge_quarantine(spark, lake, silver.quarantine(validated.where(~ok), run_id=run_id, now=now))
            reasons = validated.where(~ok).groupBy(F.col("_rules")[0].alias("rule")).count().collect()
            stats.quarantine_rules = {r["rule"]: r["count"] for r in reasons}
        stats.seconds["silver_quarantine"] = round(time.perf_counter() - t0 - stats.seconds["silver_decode"], 2)
        t_write = time.perf_counter()
        # Not kept: the slice lists and the write read it (a narrow scan, then the write), and writing 5M
        # wide rows to scratch only to read them back cost more than the transform's projection.
        rows = silver.transform(validated.where(ok), run_id=run_id, now=now)
        merged = silver.write_silver(spark, lake, rows, valid_modes)
        stats.superseded_rows = stats.valid_rows - merged.source_rows
        stats.touched_days = merged.touched_days
        silver.record_progress(lake, progress, run_id=run_id)
    stats.seconds["silver_compute"] = round(t_write - t0, 2)
    stats.seconds["silver_write"] = round(time.perf_counter() - t_write, 2)
    stats.silver_upserted = merged.upserted
    stats.silver_removed = merged.deleted_or_cleared
    log.info(
        "silver: %s messages, %s source rows, %s valid, %s quarantined, %s upserted",
        stats.bronze_messages,
        stats.source_rows,
        stats.valid_rows,
        stats.quarantined,
        stats.silver_upserted,
    )
    return merged.months


def _read_gold(spark: SparkSession, lake: Lake, table: str, schema: pa.Schema, months: list[str]) -> DataFrame:
    """Stored rows of a monthly gold table for the given months, in the table's column order."""
    return delta.read(spark, lake, table, schema, where=_months_where("charge_month", months))


def _stored_tag_keys(lake: Lake, months: list[str], touched: list[date]) -> dict[str, tuple[set, set]]:
    """Per month, the tag keys stored gold cost_by_tag holds on the month's untouched days: (every key,
    keys with a real value). Small (one row per day, subscription, key and value): read on the driver."""
    if not lake.exists(GOLD_COST_BY_TAG.name):
        return {}
    arrow = lake.read_arrow(
        GOLD_COST_BY_TAG.name,
        columns=["charge_month", "charge_date", "tag_key", "tag_value"],
        filters=[("charge_month", "in", months)],
    )
    arrow = arrow.filter(pc.invert(pc.is_in(arrow["charge_date"], pa.array(touched, pa.date32()))))
    keys: dict[str, tuple[set, set]] = {}
    for row in arrow.group_by(["charge_month", "tag_key"]).aggregate([]).to_pylist():
        keys.setdefault(row["charge_month"], (set(), set()))[0].add(row["tag_key"])
    # A real value of "untagged" cannot be told from the untagged rows: such a key counts as not proven real.
    real = arrow.filter(pc.not_equal(pc.fill_null(arrow["tag_value"], ""), gold.UNTAGGED))
    for row in real.group_by(["charge_month", "tag_key"]).aggregate([]).to_pylist():
        keys[row["charge_month"]][1].add(row["tag_key"])
    return keys


def _isin(column: str, values: list) -> Column:
    return F.col(column).isin(*values) if values else F.lit(False)


def _dates_sql(days: list[date]) -> str:
    return ", ".join(f"DATE'{d.isoformat()}'" for d in sorted(days))


def _rows_in_scope(whole: list[str], days: dict[str, list[date]], date_column: str) -> str:
    """A replaceWhere predicate: every row of the `whole` months, and the rows of the listed days of the others."""
    clauses = [f"`charge_month` IN ({sql_list(whole)})"] if whole else []
    if days:
        listed = [d for ds in days.values() for d in ds]
        clauses.append(f"(`charge_month` IN ({sql_list(sorted(days))}) AND `{date_column}` IN ({_dates_sql(listed)}))")
    return " OR ".join(clauses) if clauses else "false"


def _replace_gold(
    frame: DataFrame,
    lake: Lake,
    spec,
    months: list[str] | None,
    *,
    whole: list[str] | None = None,
    days: dict[str, list[date]] | None = None,
    date_column: str = "charge_date",
) -> int:
    """One commit per table: the target months replaced (on a full rebuild, everything); with `days`, only those
    days of their months, the month's other rows staying as stored."""
    t0 = time.perf_counter()
    if months is None:
        rows = delta.replace(frame, lake, spec.name, spec.schema, partition_by=spec.partition_by)
    elif not days:
        rows = delta.replace(frame, lake, spec.name, spec.schema, partition_by=spec.partition_by, values=months)
    else:
        where = _rows_in_scope(whole or [], days, date_column)
        rows = delta.replace(frame, lake, spec.name, spec.schema, partition_by=spec.partition_by, where=where)
    log.info("gold %s: %s rows in %.1fs", spec.name, rows, time.perf_counter() - t0)
    return rows


def _by_month(days: list[date]) -> dict[str, list[date]]:
    out: dict[str, list[date]] = {}
    for d in sorted(days):
        out.setdefault(d.strftime("%Y-%m"), []).append(d)
    return out


def _cost_by_tag(
    spark: SparkSession,
    silver_month: DataFrame,
    silver_rows: DataFrame,
    whole: list[str] | None,
    partial: dict[str, list[str]],
    tag_partial: dict[str, set],
    area: Scratch,
    *,
    run_id: str,
) -> tuple[DataFrame, list[str] | None, dict[str, list[date]]]:
    """cost_by_tag rows to write, the months written whole and the days written in the others: months in
    `tag_partial` get their touched days' rows (computed with the month's stored keys; their other days
    stay as stored), every other month is computed whole from silver."""
    if not partial:
        return gold.cost_by_tag(None, run_id=run_id, sums=area.keep(gold.tag_sums(silver_rows), "tag_sums")), whole, {}
    kept_days = [date.fromisoformat(d) for m in tag_partial for d in partial[m]]
    recompute = [m for m in partial if m not in tag_partial]
    rows = silver_rows
    if recompute:
        log.info("gold cost_by_tag: the tag keys of %s changed; recomputing those months whole", recompute)
        rows = silver_month.where(_isin("x_ChargeMonth", [*whole, *recompute]) | _isin("x_ChargeDate", kept_days))
        # The families on these months' other days are not known here: always prefer the most detailed.
        rows = gold.prefer_detail(rows)
    keys = [(m, k) for m, ks in sorted(tag_partial.items()) for k in sorted(ks)]
    month_keys = spark.createDataFrame(keys, "charge_month string, tag_key string") if keys else None
    out = gold.cost_by_tag(None, run_id=run_id, month_keys=month_keys, sums=area.keep(gold.tag_sums(rows), "tag_sums"))
    return out, [*whole, *recompute], _by_month(kept_days)


def _change_days(
    daily: DataFrame, whole: list[str], touched: list[date]
) -> tuple[tuple[date | None, date | None], list[date], Column]:
    """For an increment's start/stop: the data's (first, last) day, the days of the partial months whose events
    may change, and a filter of the daily rows those events (and the whole months') are computed from.

    A day's event depends on the resource's cost that day and on the days either side, and on the data's
    first and last day. So the touched days and the days either side of them may change, and so do the
    untouched first and last days (a new last day lets the old one say "stopped"). A whole month needs
    every day and the day either side of it."""
    resource_rows = daily.where(F.col("resource_id") != "")
    untouched = F.when(~_isin("charge_date", touched), F.col("charge_date"))
    first, last, first_kept, last_kept = resource_rows.agg(
        F.min("charge_date"), F.max("charge_date"), F.min(untouched), F.max(untouched)
    ).first()
    partial_months = {d.strftime("%Y-%m") for d in touched}
    near = {d + timedelta(days=k) for d in touched for k in (-1, 0, 1)} | {d for d in (first_kept, last_kept) if d}
    event_days = sorted(d for d in near if d.strftime("%Y-%m") in partial_months)
    needed = {d + timedelta(days=k) for d in event_days for k in (-1, 0, 1)}
    for month in whole:
        start = date.fromisoformat(f"{month}-01")
        needed |= {start - timedelta(days=1), (start + timedelta(days=32)).replace(day=1)}
    rows = _isin("charge_month", whole) | _isin("charge_date", sorted(needed))
    return (first, last), event_days, rows


def run_gold(
    spark: SparkSession,
    lake: Lake,
    months: list[str] | None,
    *,
    run_id: str,
    days: dict[str, list[str]] | None = None,
    reporting_currency: str | None = None,
) -> dict[str, int]:
    """Recompute gold for `months` (all months when None = full rebuild) and replace exactly those partitions.

    `reporting_currency` (None: no conversion) is what cost_daily's *_converted columns are in, with the
    month's rate from silver/fx_rates (backend.sources.fx.reporting_currency resolves it from settings).

    `days` (month -> ISO charge days) says which days of a month silver changed: for those months only
    these days are recomputed from silver and written (cost_daily, cost_by_tag, and the start/stop events
    those days can change); the month's other rows stay as stored, and the monthly summary derives from
    the month's daily rows as then stored. Months without an entry are recomputed whole. Valid only when
    every silver change in the month since gold last ran is on those days (the caller knows: silver's
    MERGE replaces whole day slices) and the month's stored conversion is current (same rates, same
    reporting currency).
    """
    partial = {} if months is None else {m: sorted(days[m]) for m in months if days and days.get(m)}
    touched = [date.fromisoformat(d) for m in partial for d in partial[m]]
    whole = None if months is None else [m for m in months if m not in partial]
    silver_month = read_silver(spark, lake, months)
    silver_rows = silver_month
    with Scratch(spark, lake, run_id) as area:
        if partial:
            # Filtered right at the read, so Parquet statistics on the charge date can skip row groups. The
            # touched days are few rows: kept once, so the family and tag-key checks, the daily and by-tag
            # tables and resource tags read them instead of each scanning the month's files again.
            silver_rows = area.keep(
                silver_month.where(_isin("x_ChargeMonth", whole) | _isin("x_ChargeDate", touched)), "silver"
            )
        # Choosing the most detailed family per (subscription, day) needs a join; with one family in scope
        # (the usual case: one kind of source) every row is kept, so skip it.
        families = [r[0] for r in silver_rows.select("x_SourceFamily").distinct().collect()]
        if len(families) > 1:
            silver_rows = gold.prefer_detail(silver_rows)
        touched_keys: dict[str, set] = {}
        if partial:
            keys = silver_rows.select("x_ChargeMonth", F.explode(F.map_keys("Tags")).alias("tag_key"))
            for r in keys.where(_isin("x_ChargeMonth", list(partial))).distinct().collect():
                touched_keys.setdefault(r["x_ChargeMonth"], set()).add(r["tag_key"])
        # cost_by_tag reports "untagged" for every key seen in the month, so a month's untouched days stay
        # as stored only when its key set does not change: the touched days bring no key the other days
        # lack, and every key of the other days is still seen (a real value there, or on a touched day).
        # Otherwise that month's by-tag rows are recomputed whole.
        stored_keys = _stored_tag_keys(lake, sorted(partial), touched) if partial else {}
        tag_partial = {}
        for m in partial:
            every, real = stored_keys.get(m, (set(), set()))
            new = touched_keys.get(m, set())
            if new <= every and every <= real | new:
                tag_partial[m] = every
        # A few rows per month: the engine broadcasts them into the daily rows' join.
        fx = None
        if reporting_currency and lake.exists(SILVER_FX_RATES.name):
            fx = delta.read(spark, lake, SILVER_FX_RATES.name, SILVER_FX_RATES.schema)
        written: dict[str, int] = {}
        # Written first and straight from silver: the other tables derive from the daily rows as stored,
        # so an increment's daily rows are aggregated once and never staged in scratch.
        daily = gold.cost_daily(silver_rows, run_id=run_id, fx=fx, reporting_currency=reporting_currency)
        touched_by_month = _by_month(touched)
        written[GOLD_COST_DAILY.name] = _replace_gold(
            daily, lake, GOLD_COST_DAILY, months, whole=whole, days=touched_by_month
        )
        # The monthly summary's previous month and start/stop at a month's first day also need the month
        # before each target month. Silver did not change there (else it would be a target month), so its
        # stored daily rows are read as they are, as are a month's untouched days: an increment aggregates
        # its days of silver, not the month's or two months'.
        previous = [] if months is None else sorted({_previous_month(m) for m in months} - set(months))
        scope = None if months is None else sorted({*months, *previous})
        daily_all = _read_gold(spark, lake, GOLD_COST_DAILY.name, GOLD_COST_DAILY.schema, scope)
        written[GOLD_MONTHLY_SUMMARY.name] = _replace_gold(
            gold.monthly_summary(daily_all, run_id=run_id, months=months), lake, GOLD_MONTHLY_SUMMARY, months
        )
        t_tags = time.perf_counter()
        by_tag, by_tag_whole, by_tag_days = _cost_by_tag(
            spark, silver_month, silver_rows, whole, partial, tag_partial, area, run_id=run_id
        )
        log.info("gold %s: %s in %.1fs", "scratch (tag sums)", "kept", time.perf_counter() - t_tags)
        written[GOLD_COST_BY_TAG.name] = _replace_gold(
            by_tag, lake, GOLD_COST_BY_TAG, months, whole=by_tag_whole, days=by_tag_days
        )
        if partial:
            bounds, event_days, needed = _change_days(daily_all, whole, touched)
            changes = gold.cost_changes(daily_all.where(needed), run_id=run_id, months=months, bounds=bounds)
            changes = changes.where(_isin("charge_month", whole) | _isin("event_date", event_days))
            written[GOLD_COST_CHANGES.name] = _replace_gold(
                changes,
                lake,
                GOLD_COST_CHANGES,
                months,
                whole=whole,
                days=_by_month(event_days),
                date_column="event_date",
            )
        else:
            written[GOLD_COST_CHANGES.name] = _replace_gold(
                gold.cost_changes(daily_all, run_id=run_id, months=months), lake, GOLD_COST_CHANGES, months
            )
        t0 = time.perf_counter()
        # First/last seen folds into what the table held, so the touched days' silver rows are enough.
        # Small dimension table, written whole: materialised first, since it reads the table it replaces.
        existing_tags = None
        if months is not None and lake.exists(GOLD_RESOURCE_TAGS.name):
            existing_tags = delta.read(spark, lake, GOLD_RESOURCE_TAGS.name, GOLD_RESOURCE_TAGS.schema)
        tags = gold.resource_tags(silver_rows, run_id=run_id, existing=existing_tags)
        if existing_tags is not None:
            tags = area.keep(tags, "resource_tags")
        written[GOLD_RESOURCE_TAGS.name] = delta.replace(tags, lake, GOLD_RESOURCE_TAGS.name, GOLD_RESOURCE_TAGS.schema)
        log.info(
            "gold %s: %s rows in %.1fs",
            GOLD_RESOURCE_TAGS.name,
            written[GOLD_RESOURCE_TAGS.name],
            time.perf_counter() - t0,
        )
    return written


def reset_for_rebuild(lake: Lake, *, run_id: str) -> None:
    """Empty silver and quarantine (schema kept, history kept: time travel still shows the old state)."""
    lake.overwrite(
        SILVER_COSTS.name, SILVER_COSTS.schema.empty_table(), run_id=run_id, partition_by=SILVER_COSTS.partition_by
    )
    lake.overwrite(SILVER_QUARANTINE.name, SILVER_QUARANTINE.schema.empty_table(), run_id=run_id)
