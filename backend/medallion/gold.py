"""Gold: daily cost, monthly summary, cost by tag, resource tags and started/stopped resources, from silver."""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)

from backend.lake.catalog import (
    FAMILY_RANK,
    GOLD_COST_BY_TAG,
    GOLD_COST_CHANGES,
    GOLD_COST_DAILY,
    GOLD_MONTHLY_SUMMARY,
    GOLD_RESOURCE_TAGS,
    MONEY_SQL,
)
from backend.lake.engine import conform
from backend.medallion.frames import aggregate_repeated, with_small

UNTAGGED = "untagged"

# gold column <- silver column; dimensions are never null in gold ("" = unknown).
DAILY_DIMENSIONS = {
    "billing_account_id": "BillingAccountId",
    "billing_account_name": "BillingAccountName",
    "subscription_id": "SubAccountId",
    "subscription_name": "SubAccountName",
    "resource_group": "x_ResourceGroupName",
    "resource_id": "ResourceId",
    "resource_name": "ResourceName",
    "resource_type": "ResourceType",
    "region": "RegionName",
    "service_name": "ServiceName",
    "service_category": "ServiceCategory",
    "meter_category": "x_MeterCategory",
    "meter_name": "x_MeterName",
    "pricing_model": "x_PricingModel",
    "charge_category": "ChargeCategory",
    "billing_currency": "BillingCurrency",
    "pricing_unit": "PricingUnit",
    # FOCUS: the cloud and who sold the service, so every page can split a multi-cloud bill.
    "provider_name": "ProviderName",
    "service_provider_name": "ServiceProviderName",
    "publisher_name": "PublisherName",
    "invoice_issuer_name": "InvoiceIssuerName",
}


def _month(date_col: Column) -> Column:
    return F.date_format(date_col, "yyyy-MM")


def _in_months(col: Column, months: list[str] | None) -> Column:
    return F.lit(True) if months is None else col.isin(*months)


def _sum(col: str) -> Column:
    return F.sum(col).cast(MONEY_SQL)


def _complete_sum(col: str) -> Column:
    """The sum, or null when a row lacks the metric: a total over days where it is not available is not a total."""
    return F.when(F.count(F.lit(1)) == F.count(col), F.sum(col)).cast(MONEY_SQL)


# Scope of a metric's availability: a (subscription or billing account, day) that one report covers.
_SCOPE_DAY = ("subscription_id", "billing_account_id", "charge_date")


def with_metric_availability(
    rows: DataFrame, measures: dict[str, str], scope: tuple[str, ...] = _SCOPE_DAY
) -> DataFrame:
    """Per scope and day, a metric some row carries is 0 where other rows lack it; a metric no row carries stays null.

    An actual-cost export alone says nothing about amortized cost (null: "not available", never 0 and
    never a copy of actual cost). Once a report of the other metric covers the same scope and day, a row
    it does not mention (a reservation purchase is not in the amortized view) costs 0 in that metric.
    """
    flags = rows.groupBy(*scope).agg(
        *[F.max(F.col(col).isNotNull()).alias(f"_has_{name}") for name, col in measures.items()]
    )
    # Small (scopes x days): hashed, so the wide rows are not held for it.
    joined = with_small(rows, flags, scope)
    for name, col in measures.items():
        joined = joined.withColumn(col, F.when(F.col(f"_has_{name}"), F.coalesce(F.col(col), F.lit(0))).cast(MONEY_SQL))
    return joined.drop(*[f"_has_{name}" for name in measures])


COMMITMENT_MEASURES = ("commitment_used_cost", "commitment_unused_cost")


def with_commitment_availability(daily: DataFrame) -> DataFrame:
    """Per source and day, both commitment measures are 0 on rows no commitment covers once any row carries a status.

    A row without CommitmentDiscountStatus is either not covered by a commitment (a FOCUS row: 0 used,
    0 unused) or from a source that does not carry the column (an Azure export: not available). Which
    one is told by the source's other rows of the day; a source-day without any status stays null.
    Used and unused share one flag, so utilisation never divides a known used cost by a missing unused.
    """
    carried = F.col(COMMITMENT_MEASURES[0]).isNotNull() | F.col(COMMITMENT_MEASURES[1]).isNotNull()
    flags = daily.groupBy("source", "charge_date").agg(F.max(carried).alias("_has_commitment"))
    joined = with_small(daily, flags, ["source", "charge_date"])
    for name in COMMITMENT_MEASURES:
        joined = joined.withColumn(
            name, F.when(F.col("_has_commitment"), F.coalesce(F.col(name), F.lit(0))).cast(MONEY_SQL)
        )
    return joined.drop("_has_commitment")


def prefer_detail(silver: DataFrame) -> DataFrame:
    """Keep, per (subscription, day), only rows of the most detailed family present (never double count)."""
    rank = F.create_map(*[F.lit(x) for kv in FAMILY_RANK.items() for x in kv])[F.col("x_SourceFamily")]
    ranked = silver.withColumn("_rank", F.coalesce(rank, F.lit(0)))
    best = ranked.groupBy(F.col("SubAccountId").alias("_s"), F.col("x_ChargeDate").alias("_d")).agg(
        F.max("_rank").alias("_r")
    )
    # eqNullSafe: rows scoped to a billing account only (null subscription) must keep their day. `best` has
    # one row per (subscription, day), so an inner join with it is the semi join; the small side goes first
    # so the engine hashes it (see frames.with_small).
    joined = (
        F.broadcast(best)
        .join(
            ranked,
            ranked["SubAccountId"].eqNullSafe(F.col("_s"))
            & (ranked["x_ChargeDate"] == F.col("_d"))
            & (ranked["_rank"] == F.col("_r")),
            "inner",
        )
        .select(*ranked.columns)
    )
    return joined.drop("_rank")


def cost_daily(
    silver: DataFrame, *, run_id: str, fx: DataFrame | None = None, reporting_currency: str | None = None
) -> DataFrame:
    """Pure transform: preferred silver rows -> GOLD_COST_DAILY.schema rows (one row per day and dimension set)."""
    dims = [F.coalesce(F.col(src), F.lit("")).alias(dst) for dst, src in DAILY_DIMENSIONS.items()]
    measures = {"actual_cost": "BilledCost", "amortized_cost": "EffectiveCost", "list_cost": "ListCost",
                "quantity": "PricingQuantity", "contracted_cost": "ContractedCost"}  # fmt: skip
    status = F.lower(F.trim(F.col("CommitmentDiscountStatus")))
    # Effective cost by commitment status: what a commitment covered (used) and what it left idle (unused).
    commitment = {
        "commitment_used_cost": F.when(status == "used", F.col("EffectiveCost")),
        "commitment_unused_cost": F.when(status == "unused", F.col("EffectiveCost")),
    }
    keyed = silver.select(
        F.col("x_ChargeDate").alias("charge_date"),
        *dims,
        F.col("x_SourceFamily").alias("source"),
        *[F.col(src).alias(dst) for dst, src in measures.items()],
        *[value.alias(name) for name, value in commitment.items()],
    )
    measures = {**measures, **{name: name for name in commitment}}
    # Most silver rows are alone in their daily group (the day grain keeps the meter and pricing).
    daily = aggregate_repeated(
        keyed,
        ["charge_date", *DAILY_DIMENSIONS, "source"],
        [*[_sum(m).alias(m) for m in measures], F.count(F.lit(1)).alias("row_count")],
        [*[F.col(m).cast(MONEY_SQL).alias(m) for m in measures], F.lit(1).cast("long").alias("row_count")],
    )
    daily = with_metric_availability(daily, {"actual": "actual_cost", "amortized": "amortized_cost"})
    daily = with_commitment_availability(daily)
    daily = daily.withColumn("charge_month", _month(F.col("charge_date")))
    return restamp_daily(daily, run_id=run_id, fx=fx, reporting_currency=reporting_currency)


# Rates as gold multiplies them: 8 integer digits, 12 decimals. DECIMAL(28,12) x DECIMAL(20,12) keeps 13
# decimals in Spark's result type (a DECIMAL(28,12) rate would leave 6), so each product is exact to 1e-12.
RATE_SQL = "DECIMAL(20,12)"
CONVERTED = {"actual_cost_converted": "actual_cost", "amortized_cost_converted": "amortized_cost"}


def restamp_daily(
    daily: DataFrame, *, run_id: str, fx: DataFrame | None = None, reporting_currency: str | None = None
) -> DataFrame:
    """Daily rows (computed or read back from gold) with the converted costs and run id of this run.

    Conversion to `reporting_currency` (None: no conversion, every *_converted is null) uses the month's
    rate from `fx` (SILVER_FX_RATES.schema rows; only those to the reporting currency are used, one per
    month and from-currency); a row already in the reporting currency converts at 1; a row without a
    rate stays null, never 0. An increment keeps a month's untouched days from stored gold; converting
    them again with today's rates keeps them exactly what recomputing the whole month would give.
    """
    daily = daily.drop(*CONVERTED, "run_id")
    if reporting_currency is None:
        for converted in CONVERTED:
            daily = daily.withColumn(converted, F.lit(None).cast(MONEY_SQL))
        return conform(daily.withColumn("run_id", F.lit(run_id)), GOLD_COST_DAILY.schema)
    same = F.col("billing_currency") == F.lit(reporting_currency)
    one = F.lit(1).cast(RATE_SQL)
    if fx is None:
        rate = F.when(same, one)
    else:
        rates = fx.where(F.col("to_currency") == F.lit(reporting_currency)).select(
            F.col("rate_month").alias("charge_month"),
            F.col("from_currency").alias("billing_currency"),
            F.col("rate").cast(RATE_SQL).alias("_rate"),
        )
        daily = with_small(daily, rates, ["charge_month", "billing_currency"])
        rate = F.when(same, one).otherwise(F.col("_rate"))
    for converted, cost in CONVERTED.items():
        daily = daily.withColumn(converted, (F.col(cost) * rate).cast(MONEY_SQL))
    return conform(daily.withColumn("run_id", F.lit(run_id)), GOLD_COST_DAILY.schema)


def monthly_summary(daily: DataFrame, *, run_id: str, months: list[str] | None = None) -> DataFrame:
    """Pure transform: gold daily rows (target months plus their previous months) -> GOLD_MONTHLY_SUMMARY.schema rows."""
    keys = ["billing_account_id", "subscription_id", "billing_currency"]
    monthly = daily.groupBy("charge_month", *keys).agg(
        F.max("subscription_name").alias("subscription_name"),
        _complete_sum("actual_cost").alias("actual_cost"),
        _complete_sum("amortized_cost").alias("amortized_cost"),
        _sum("list_cost").alias("list_cost"),
        _complete_sum("actual_cost_converted").alias("actual_cost_converted"),
        _complete_sum("amortized_cost_converted").alias("amortized_cost_converted"),
        F.countDistinct("charge_date").cast("int").alias("days_with_cost"),
        F.countDistinct(F.nullif(F.col("resource_id"), F.lit(""))).alias("resource_count"),
        F.sum("row_count").alias("row_count"),
    )
    previous = monthly.select(
        _month(F.add_months(F.to_date(F.concat(F.col("charge_month"), F.lit("-01"))), 1)).alias("charge_month"),
        *keys,
        F.col("actual_cost").alias("previous_month_actual_cost"),
        F.col("amortized_cost").alias("previous_month_amortized_cost"),
    )
    out = monthly.join(previous, ["charge_month", *keys], "left").where(_in_months(F.col("charge_month"), months))
    return conform(out.withColumn("run_id", F.lit(run_id)), GOLD_MONTHLY_SUMMARY.schema)


TOTAL_KEY = ""  # tag_sums' key of a day's total
_TAG_GRAIN = ["charge_date", "subscription_id", "billing_currency", "charge_month"]


def tag_sums(silver: DataFrame) -> DataFrame:
    """Preferred silver rows -> costs and row counts per (day, subscription, currency, tag key, tag value),
    plus each day's total under the tag key TOTAL_KEY: everything cost_by_tag needs, in one pass over silver."""
    base = silver.select(
        F.col("x_ChargeDate").alias("charge_date"),
        F.coalesce(F.col("SubAccountId"), F.lit("")).alias("subscription_id"),
        F.coalesce(F.col("BillingAccountId"), F.lit("")).alias("billing_account_id"),
        F.coalesce(F.col("BillingCurrency"), F.lit("")).alias("billing_currency"),
        "Tags",
        "BilledCost",
        "EffectiveCost",
    ).withColumn("charge_month", _month(F.col("charge_date")))
    base = with_metric_availability(base, {"actual": "BilledCost", "amortized": "EffectiveCost"})
    # Every row stands once per tag it carries and once more, under the key "" (silver drops empty tag keys),
    # for the total: one explode and one aggregate instead of an aggregate per role. (A null key would need
    # a nullable struct field, and Sail refuses to concatenate arrays that differ only in nullability.)
    total = F.array(F.struct(F.lit(TOTAL_KEY).alias("key"), F.lit(None).cast("string").alias("value")))
    entries = F.explode(F.concat(F.map_entries("Tags"), total)).alias("_tag")
    exploded = base.select(*_TAG_GRAIN, entries, "BilledCost", "EffectiveCost")
    return exploded.groupBy(
        *_TAG_GRAIN, F.col("_tag.key").alias("tag_key"), F.col("_tag.value").alias("tag_value")
    ).agg(
        _sum("BilledCost").alias("actual_cost"),
        _sum("EffectiveCost").alias("amortized_cost"),
        F.count(F.lit(1)).alias("n"),
    )


def cost_by_tag(
    silver: DataFrame | None, *, run_id: str, month_keys: DataFrame | None = None, sums: DataFrame | None = None
) -> DataFrame:
    """Pure transform: preferred silver rows (or their `tag_sums`, when the caller kept them) -> GOLD_COST_BY_TAG.schema rows.

    For every tag key seen in a month, the cost of rows lacking that key is reported under the
    value "untagged", so each key's values add up to the day's total. `month_keys` (charge_month,
    tag_key) adds keys seen on days of the month that are not in `silver` (an increment computes
    only the days it touched). The sums are read four times below: a caller on Sail (no plan reuse)
    passes them materialised.
    """
    sums = tag_sums(silver) if sums is None else sums
    grain = _TAG_GRAIN
    tagged = sums.where(F.col("tag_key") != TOTAL_KEY)
    totals = sums.where(F.col("tag_key") == TOTAL_KEY).select(
        *grain,
        F.col("actual_cost").alias("t_actual"),
        F.col("amortized_cost").alias("t_amortized"),
        F.col("n").alias("t_n"),
    )
    per_key = tagged.groupBy(*grain, "tag_key").agg(
        _sum("actual_cost").alias("k_actual"), _sum("amortized_cost").alias("k_amortized"), F.sum("n").alias("k_n")
    )
    keys_of_month = tagged.select("charge_month", "tag_key")
    if month_keys is not None:
        keys_of_month = keys_of_month.unionByName(month_keys.select("charge_month", "tag_key"))
    keys_of_month = keys_of_month.distinct()
    untagged = (
        totals.join(keys_of_month, "charge_month")
        .join(per_key, [*grain, "tag_key"], "left")
        .where(F.col("t_n") > F.coalesce(F.col("k_n"), F.lit(0)))
        .select(
            *grain,
            "tag_key",
            F.lit(UNTAGGED).alias("tag_value"),
            (F.col("t_actual") - F.coalesce(F.col("k_actual"), F.lit(0))).cast(MONEY_SQL).alias("actual_cost"),
            (F.col("t_amortized") - F.coalesce(F.col("k_amortized"), F.lit(0))).cast(MONEY_SQL).alias("amortized_cost"),
        )
    )
    out = tagged.drop("n").unionByName(untagged).withColumn("run_id", F.lit(run_id))
    return conform(out, GOLD_COST_BY_TAG.schema)


def resource_tags(silver: DataFrame, *, run_id: str, existing: DataFrame | None = None) -> DataFrame:
    """Pure transform: (resource, tag key, tag value) with first/last day seen, folded into the existing table."""
    seen = (
        silver.where(F.col("ResourceId").isNotNull())
        .select("ResourceId", "x_ChargeDate", F.explode("Tags").alias("tag_key", "tag_value"))
        .groupBy(
            F.col("ResourceId").alias("resource_id"), "tag_key", F.coalesce("tag_value", F.lit("")).alias("tag_value")
        )
        .agg(F.min("x_ChargeDate").alias("first_seen"), F.max("x_ChargeDate").alias("last_seen"))
    )
    if existing is not None:
        seen = seen.unionByName(existing.select("resource_id", "tag_key", "tag_value", "first_seen", "last_seen"))
        seen = seen.groupBy("resource_id", "tag_key", "tag_value").agg(
            F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen")
        )
    return conform(seen.withColumn("run_id", F.lit(run_id)), GOLD_RESOURCE_TAGS.schema)


def _cost_basis(daily: DataFrame) -> DataFrame:
    # Start/stop hints follow amortized cost (what the resource really costs), actual where no
    # amortized report exists.
    return daily.withColumn("_cost", F.coalesce(F.col("amortized_cost"), F.col("actual_cost")))


def resource_day_costs(daily: DataFrame) -> DataFrame:
    """Gold daily rows summed per (day, resource, subscription, service, resource group, currency).

    Started/stopped resources only look at these columns; daily rows also split by meter, pricing
    model, charge category etc., so this is several times smaller than the daily table.
    """
    return (
        _cost_basis(daily)
        .groupBy(
            "charge_date",
            "charge_month",
            "resource_id",
            "subscription_id",
            "service_name",
            "resource_group",
            "billing_currency",
        )
        .agg(_sum("_cost").alias("_cost"))
    )


def cost_changes(
    daily: DataFrame,
    *,
    run_id: str,
    months: list[str] | None = None,
    base: DataFrame | None = None,
    bounds: tuple[date | None, date | None] | None = None,
) -> DataFrame:
    """Pure transform: resources whose daily cost started after a gap or stopped before one (idle/waste hints).

    The first day of the data cannot say "started" and its last day cannot say "stopped". `base` is
    `resource_day_costs(daily)` when the caller already has it. A day's events depend only on that day,
    the day before and the day after, so `daily` may hold only some days: those whose events are wanted
    and the days either side of them. Then `bounds` gives the data's (first, last) day, which such rows
    cannot tell.
    """
    base = (resource_day_costs(daily) if base is None else base).where(F.col("resource_id") != "")
    per_day = (
        base.groupBy("resource_id", "subscription_id", "billing_currency", "charge_date")
        .agg(
            _sum("_cost").alias("daily_cost"),
            F.max("resource_group").alias("resource_group"),
            F.max("service_name").alias("service_name"),
        )
        .where(F.col("daily_cost") != 0)
    )
    # The data's first and last day: two literals from a small action, so the plan below reads `base` once
    # (a cross join to an aggregate of it would scan and aggregate it a second time).
    first, last = base.agg(F.min("charge_date"), F.max("charge_date")).first() if bounds is None else bounds
    order = Window.partitionBy("resource_id", "subscription_id", "billing_currency").orderBy("charge_date")
    day, prev, nxt = F.col("charge_date"), F.col("_prev"), F.col("_next")
    started = (day > F.lit(first)) & (prev.isNull() | (prev < F.date_sub(day, 1)))
    stopped = (day < F.lit(last)) & (nxt.isNull() | (nxt > F.date_add(day, 1)))
    # Both events of a day from one pass over the window (a union of two filters would compute it twice).
    events = F.filter(
        F.array(F.when(started, F.lit("started")), F.when(stopped, F.lit("stopped"))), lambda e: e.isNotNull()
    )
    out = (
        per_day.withColumn("_prev", F.lag("charge_date").over(order))
        .withColumn("_next", F.lead("charge_date").over(order))
        .withColumn("charge_month", _month(day))
        .where(_in_months(F.col("charge_month"), months))
        .select("*", F.explode(events).alias("event"))
        .withColumn("event_date", day)
        .withColumn("run_id", F.lit(run_id))
    )
    return conform(out, GOLD_COST_CHANGES.schema)
