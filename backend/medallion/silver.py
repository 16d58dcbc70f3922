"""Silver `costs`: typed, validated, FOCUS-named rows from bronze payloads, MERGEd per natural key; failures go to quarantine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)
from pyspark.sql.pandas.types import from_arrow_schema

from backend.lake import Lake
from backend.lake import engine as delta
from backend.lake.catalog import MONEY_SQL, SILVER_COSTS, SILVER_QUARANTINE
from backend.lake.engine import conform, ensure_table, sql_list
from backend.medallion.frames import aggregate_repeated
from backend.medallion.parse import DERIVED_FIELDS, LINEAGE_FIELDS, STAGING_FIELDS, STAGING_SCHEMA, explode_batches

log = logging.getLogger(__name__)

STAGING_SPARK_SCHEMA = from_arrow_schema(STAGING_SCHEMA)

FAMILY_BY_FORMAT = {
    "azure_cost_details": "azure_detail",
    "azure_export_ea": "azure_detail",
    "azure_export_mca": "azure_detail",
    "focus": "focus",
    "azure_query": "azure_query",
}
AZURE_FORMATS = ("azure_cost_details", "azure_export_ea", "azure_export_mca", "azure_query")

# Merge modes: which cost a row sets. Azure reports carry one metric each; FOCUS rows carry both.
MODE_BOTH, MODE_BILLED, MODE_EFFECTIVE = "both", "billed", "effective"

# ISO 4217 codes Costlake accepts as a billing currency (a typo such as "US" or "EURO" is quarantined).
KNOWN_CURRENCIES = frozenset(
    [
        "AED",
        "ARS",
        "AUD",
        "BGN",
        "BHD",
        "BRL",
        "CAD",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CZK",
        "DKK",
        "EGP",
        "EUR",
        "GBP",
        "HKD",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "ISK",
        "JPY",
        "KES",
        "KRW",
        "KWD",
        "MAD",
        "MXN",
        "MYR",
        "NGN",
        "NOK",
        "NZD",
        "PEN",
        "PHP",
        "PKR",
        "PLN",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "SAR",
        "SEK",
        "SGD",
        "THB",
        "TRY",
        "TWD",
        "UAH",
        "USD",
        "VND",
        "ZAR",
    ]
)

# Rules in reporting order: the first failing one is `rule`, all of them are `rules`.
RULES: tuple[str, ...] = (
    "unparseable_payload",
    "unknown_format",
    "unknown_metric",
    "missing_charge_date",
    "invalid_charge_date",
    "missing_scope",
    "missing_cost",
    "invalid_cost",
    "invalid_quantity",
    "invalid_list_cost",
    "missing_currency",
    "unknown_currency",
    "invalid_tags",
)


def _money(column: Column) -> Column:
    # try_cast: a non-numeric, NaN, infinite or out-of-range value becomes null and fails a rule
    # instead of aborting the job (ANSI mode would raise on a plain cast).
    text = F.trim(column)
    # Scientific notation ("1e2", Excel's "1.5E-05") goes through a double: Sail's decimal cast takes
    # plain digits only. Plain text stays exact.
    return F.when(text.rlike("[eE]"), text.try_cast("double").try_cast(MONEY_SQL)).otherwise(text.try_cast(MONEY_SQL))


def _pricing_model(df_model: Column, commitment_type: Column, pricing_category: Column) -> Column:
    key = F.regexp_replace(F.lower(df_model), "[^a-z]", "")
    ctype = F.regexp_replace(F.lower(commitment_type), "[^a-z]", "")
    category = F.lower(pricing_category)
    return (
        F.when(key == "ondemand", "OnDemand")
        .when(key == "reservation", "Reservation")
        .when(key == "savingsplan", "SavingsPlan")
        .when(key == "spot", "Spot")
        .when(ctype == "reservation", "Reservation")
        .when(ctype == "savingsplan", "SavingsPlan")
        .when(category == "dynamic", "Spot")
        .when(category == "standard", "OnDemand")
        .otherwise(df_model)
    )


def _charge_category(value: Column) -> Column:
    # Azure ChargeType -> FOCUS ChargeCategory; FOCUS values pass through.
    key = F.lower(value)
    return (
        F.when(key.isin("usage", "unusedreservation", "unusedsavingsplan"), "Usage")
        .when(key == "purchase", "Purchase")
        .when(key == "tax", "Tax")
        .when(key.isin("refund", "credit"), "Credit")
        .when(key.isin("roundingadjustment", "adjustment"), "Adjustment")
        .otherwise(value)
    )


def _commitment_status(status: Column, charge_type: Column, commitment_id: Column) -> Column:
    """FOCUS CommitmentDiscountStatus, derived for Azure reports, which carry none.

    Azure says "unused" in the ChargeType (UnusedReservation / UnusedSavingsPlan, amortized data
    only) and "used" by a benefit or reservation id on a usage row; purchases and refunds of a
    commitment carry the id too but are neither, so they stay null, as FOCUS leaves them.
    """
    key = F.lower(F.trim(charge_type))
    has_commitment = F.coalesce(F.trim(commitment_id), F.lit("")) != ""
    return F.coalesce(
        F.nullif(F.trim(status), F.lit("")),
        F.when(key.isin("unusedreservation", "unusedsavingsplan"), F.lit("Unused")).when(
            (key == "usage") & has_commitment, F.lit("Used")
        ),
    )


def validate(staged: DataFrame) -> DataFrame:
    """Pure transform: staging fields -> typed silver columns, lineage, `_mode`, `_rules` (empty = valid), `_raw_row`.

    Staging fields are text (the decode turns a Parquet payload's typed values into text too), beside the
    decoder's DERIVED_FIELDS.

    Two projections on purpose: every decimal parse is computed once, then the
    rules and outputs refer to the parsed columns (one inlined projection evaluated each parse
    several times and ran 5x slower).
    """
    c = F.col

    def money(name: str) -> Column:
        return _money(c(name))

    fmt = c("source_format")
    is_focus = fmt == "focus"
    is_azure = fmt.isin(*AZURE_FORMATS)
    metric = c("metric")
    mode = (
        F.when(is_focus, F.lit(MODE_BOTH))
        .when(is_azure & (metric == "ActualCost"), F.lit(MODE_BILLED))
        .when(is_azure & (metric == "AmortizedCost"), F.lit(MODE_EFFECTIVE))
    )
    cost = money("cost")
    quantity = money("pricing_quantity")
    parsed = staged.select(
        *STAGING_FIELDS,
        *[name for name, _ in LINEAGE_FIELDS],
        *[name for name, _ in DERIVED_FIELDS],
        mode.alias("_mode"),
        (c("charge_date").isNotNull() | c("charge_period_start").isNotNull()).alias("_has_date"),
        F.when(is_focus, money("billed_cost")).when(mode == MODE_BILLED, cost).alias("_billed"),
        F.when(is_focus, money("effective_cost")).when(mode == MODE_EFFECTIVE, cost).alias("_effective"),
        quantity.alias("_quantity"),
        F.coalesce(
            money("list_cost"),
            F.when(quantity.isNotNull(), (money("list_unit_price") * quantity).try_cast(MONEY_SQL)),
        ).alias("_list_cost"),
        money("contracted_cost").alias("_contracted"),
        F.upper(F.trim(c("billing_currency"))).alias("_currency"),
        F.lower(F.trim(c("resource_id"))).alias("_resource_id"),
    )
    # The charge day, subscription and tags were read in the decoder (parse.derive), once per distinct value.
    mode, has_date, charge_date = c("_mode"), c("_has_date"), c("charge_day")
    billed, effective, quantity, list_cost = c("_billed"), c("_effective"), c("_quantity"), c("_list_cost")
    currency, sub, resource_id = c("_currency"), c("sub_account"), c("_resource_id")
    needs_billed = is_focus | (mode == MODE_BILLED)
    needs_effective = is_focus | (mode == MODE_EFFECTIVE)
    cost_text_missing = F.when(is_focus, c("billed_cost").isNull() | c("effective_cost").isNull()).otherwise(
        c("cost").isNull()
    )
    cost_invalid = (~cost_text_missing) & ((needs_billed & billed.isNull()) | (needs_effective & effective.isNull()))
    checks = {
        "unparseable_payload": c("parse_error").isNotNull(),
        "unknown_format": fmt.isNull() | ~fmt.isin(*FAMILY_BY_FORMAT),
        "unknown_metric": is_azure & mode.isNull(),
        "missing_charge_date": ~has_date,
        "invalid_charge_date": has_date & charge_date.isNull(),
        "missing_scope": sub.isNull() & c("billing_account_id").isNull(),
        "missing_cost": (is_focus | mode.isNotNull()) & cost_text_missing,
        "invalid_cost": cost_invalid,
        "invalid_quantity": c("pricing_quantity").isNotNull() & quantity.isNull(),
        "invalid_list_cost": (c("list_cost").isNotNull() | c("list_unit_price").isNotNull()) & list_cost.isNull(),
        "missing_currency": currency.isNull(),
        "unknown_currency": currency.isNotNull() & ~currency.isin(*KNOWN_CURRENCIES),
        "invalid_tags": c("tags_raw").isNotNull() & c("tags").isNull(),
    }
    # A whole-message failure row only reports that; its null fields are not separate findings.
    rules = F.when(c("parse_error").isNotNull(), F.array(F.lit("unparseable_payload"))).otherwise(
        F.filter(F.array(*[F.when(checks[r], F.lit(r)) for r in RULES]), lambda x: x.isNotNull())
    )
    with_rules = parsed.withColumn("_rules", rules)
    family = F.when(
        fmt.isin(*FAMILY_BY_FORMAT), F.create_map(*[F.lit(x) for kv in FAMILY_BY_FORMAT.items() for x in kv])[fmt]
    )
    arm_type = F.regexp_extract(resource_id, r"/providers/([^/]+/[^/]+)/", 1)
    start = charge_date.cast("timestamp")
    meter_name = c("meter_name")
    # The raw row (fields as received) is kept only for failing rows: quarantine shows it.
    raw_row = F.when(
        F.size("_rules") > 0,
        F.coalesce(c("raw_payload"), F.to_json(F.struct(*[c(f) for f in STAGING_FIELDS]))),
    )
    return with_rules.select(
        *[name for name, _ in LINEAGE_FIELDS if name not in ("parse_error", "raw_payload")],
        family.alias("x_SourceFamily"),
        sub.alias("SubAccountId"),
        charge_date.alias("x_ChargeDate"),
        resource_id.alias("ResourceId"),
        F.coalesce(c("meter_id"), meter_name).alias("x_MeterId"),
        F.coalesce(c("service_name"), c("meter_category")).alias("ServiceName"),
        _charge_category(c("charge_category")).alias("ChargeCategory"),
        _pricing_model(c("pricing_model"), c("commitment_discount_type"), c("pricing_category")).alias(
            "x_PricingModel"
        ),
        F.lower(F.trim(c("commitment_discount_id"))).alias("CommitmentDiscountId"),
        F.lower(F.trim(c("resource_group"))).alias("x_ResourceGroupName"),
        currency.alias("BillingCurrency"),
        c("delivery_part").alias("x_DeliveryPart"),
        start.alias("ChargePeriodStart"),
        (start + F.expr("INTERVAL 1 DAY")).alias("ChargePeriodEnd"),
        c("billing_account_id").alias("BillingAccountId"),
        c("billing_account_name").alias("BillingAccountName"),
        c("sub_account_name").alias("SubAccountName"),
        F.coalesce(c("resource_name"), F.nullif(F.regexp_extract(resource_id, r"([^/]+)$", 1), F.lit(""))).alias(
            "ResourceName"
        ),
        F.coalesce(c("resource_type"), F.nullif(arm_type, F.lit(""))).alias("ResourceType"),
        F.lower(F.regexp_replace(c("region"), " ", "")).alias("RegionName"),
        c("service_category").alias("ServiceCategory"),
        c("charge_class").alias("ChargeClass"),
        F.coalesce(c("charge_description"), meter_name).alias("ChargeDescription"),
        c("pricing_category").alias("PricingCategory"),
        c("commitment_discount_type").alias("CommitmentDiscountType"),
        c("pricing_unit").alias("PricingUnit"),
        c("meter_category").alias("x_MeterCategory"),
        c("meter_subcategory").alias("x_MeterSubCategory"),
        meter_name.alias("x_MeterName"),
        F.coalesce(c("tags"), F.create_map().cast("map<string,string>")).alias("Tags"),  # no tags: an empty map
        quantity.alias("PricingQuantity"),
        billed.alias("BilledCost"),
        effective.alias("EffectiveCost"),
        list_cost.alias("ListCost"),
        c("_contracted").alias("ContractedCost"),
        # The cloud: 1.3 names the host, earlier versions the provider; Azure's own reports are Microsoft.
        F.coalesce(c("host_provider_name"), c("provider_name"), F.when(is_azure, F.lit("Microsoft"))).alias(
            "ProviderName"
        ),
        c("publisher_name").alias("PublisherName"),
        F.coalesce(c("invoice_issuer_name"), F.when(is_azure, F.lit("Microsoft"))).alias("InvoiceIssuerName"),
        F.coalesce(c("service_provider_name"), F.when(is_azure, F.lit("Microsoft"))).alias("ServiceProviderName"),
        F.coalesce(c("host_provider_name"), F.when(is_azure, F.lit("Microsoft"))).alias("HostProviderName"),
        _commitment_status(c("commitment_discount_status"), c("charge_category"), c("commitment_discount_id")).alias(
            "CommitmentDiscountStatus"
        ),
        *[c(field).alias(name) for field, name in _FOCUS_TEXT.items()],
        *[money(field).alias(name) for field, name in _FOCUS_MONEY.items()],
        "_mode",
        "_rules",
        raw_row.alias("_raw_row"),
    )


# FOCUS columns silver keeps as delivered (staging field -> silver column); amounts are summed like costs.
_FOCUS_TEXT = {
    "billing_account_type": "BillingAccountType",
    "sub_account_type": "SubAccountType",
    "invoice_id": "InvoiceId",
    "pricing_currency": "PricingCurrency",
    "commitment_discount_category": "CommitmentDiscountCategory",
    "commitment_discount_name": "CommitmentDiscountName",
    "commitment_discount_unit": "CommitmentDiscountUnit",
    "capacity_reservation_id": "CapacityReservationId",
    "capacity_reservation_status": "CapacityReservationStatus",
    "sku_id": "SkuId",
    "sku_price_id": "SkuPriceId",
    "sku_meter": "SkuMeter",
    "service_subcategory": "ServiceSubcategory",
    "allocated_method_id": "AllocatedMethodId",
    "allocated_method_details": "AllocatedMethodDetails",
    "allocated_resource_id": "AllocatedResourceId",
    "allocated_resource_name": "AllocatedResourceName",
    "allocated_tags": "AllocatedTags",
}
_FOCUS_MONEY = {
    "pricing_currency_effective_cost": "PricingCurrencyEffectiveCost",
    "pricing_currency_list_unit_price": "PricingCurrencyListUnitPrice",
    "pricing_currency_contracted_unit_price": "PricingCurrencyContractedUnitPrice",
    "commitment_discount_quantity": "CommitmentDiscountQuantity",
}
_SUMMED = (
    "PricingQuantity",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "PricingCurrencyEffectiveCost",
    "CommitmentDiscountQuantity",
)
_DIMENSIONS = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingAccountId",
    "BillingAccountName",
    "SubAccountName",
    "ResourceName",
    "ResourceType",
    "RegionName",
    "ServiceCategory",
    "ChargeClass",
    "ChargeDescription",
    "PricingCategory",
    "CommitmentDiscountType",
    "PricingUnit",
    "x_MeterCategory",
    "x_MeterSubCategory",
    "x_MeterName",
    "Tags",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceProviderName",
    "HostProviderName",
    "CommitmentDiscountStatus",
    *[name for name in _FOCUS_TEXT.values()],
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
    "source_format",
    "source",
)


def transform(valid: DataFrame, *, run_id: str, now: datetime | None = None) -> DataFrame:
    """Pure transform: validated rows -> one silver row per (natural key, merge mode) on SILVER_COSTS.schema
    + `_mode` + `_additive`.

    A delivery unit is a batch (an API pull) or one file of it. Within a run, per (slice, mode), the
    newest replacing unit wins (a re-pulled window or a re-delivered export replaces the older one) and
    units that add to it (part files: `delivery_mode` "add", decided at import) arriving after it stay;
    rows of a unit with the same natural key are summed, so nothing is lost.
    """
    now = now or datetime.now(UTC)
    c = F.col
    slice_col = F.concat_ws(
        "|", c("x_SourceFamily"), F.coalesce(c("SubAccountId"), c("BillingAccountId")), c("x_ChargeDate").cast("string")
    )
    rows = valid.withColumn("x_Slice", slice_col).withColumn(
        "_additive", F.coalesce(c("delivery_mode") == F.lit("add"), F.lit(False))
    )
    rows = rows.withColumn("_unit", F.coalesce(c("delivery_id"), F.lit("")))
    unit = ["x_Slice", "_mode", "batch_id", "_unit"]
    # Units per (slice, mode): a small aggregate joined back, cheaper than a window over all rows.
    units = rows.groupBy(*unit).agg(F.max("fetched_at").alias("_fetched"), F.max("_additive").alias("_adds"))
    if not units.groupBy("x_Slice", "_mode").count().where("count > 1").isEmpty():
        # Only when some slice came in several units (a re-pull, or several files, in the same run): the
        # semi join of every wide row is skipped otherwise.
        newest = Window.partitionBy("x_Slice", "_mode").orderBy(
            F.col("_fetched").desc_nulls_last(), F.col("batch_id").desc(), F.col("_unit").desc()
        )
        replacing = (
            units.where(~F.col("_adds"))
            .withColumn("_n", F.row_number().over(newest))
            .where("_n = 1")
            .select(
                "x_Slice",
                "_mode",
                F.col("_fetched").alias("_since"),
                F.col("batch_id").alias("_since_batch"),
                F.col("_unit").alias("_since_unit"),
            )
        )
        kept = (
            units.join(replacing, ["x_Slice", "_mode"], "left")
            .where(
                F.col("_since").isNull()
                | ((F.col("batch_id") == F.col("_since_batch")) & (F.col("_unit") == F.col("_since_unit")))
                | (F.col("_adds") & (F.col("_fetched") >= F.col("_since")))
            )
            .select(*unit)
        )
        # One row per unit in `kept`: the inner join is the semi join, with the small side hashed.
        rows = F.broadcast(kept).join(rows, unit, "inner").select(*rows.columns)
    group = [*SILVER_COSTS.key, "_mode", "_additive", "x_Slice", "batch_id"]
    dims = F.struct(*[c(d) for d in _DIMENSIONS])
    lineage = F.struct(c("topic"), c("partition"), c("offset"), c("bronze_run_id"))
    first_row = F.struct(c("topic"), c("partition"), c("offset"), c("row_index"))
    grouped = aggregate_repeated(
        rows,
        group,
        [
            *[F.sum(m).cast(MONEY_SQL).alias(m) for m in _SUMMED],
            # Non-key attributes come from the first source row (deterministic: ordered by Kafka position).
            F.min_by(dims, first_row).alias("_dims"),
            F.min_by(lineage, first_row).alias("_lineage"),
            F.count(F.lit(1)).alias("x_SourceRowCount"),
        ],
        [
            *[c(m).cast(MONEY_SQL).alias(m) for m in _SUMMED],
            dims.alias("_dims"),
            lineage.alias("_lineage"),
            F.lit(1).cast("long").alias("x_SourceRowCount"),
        ],
    )
    mode = c("_mode")
    out = grouped.select(
        *SILVER_COSTS.key,
        *[c("_dims")[d].alias(d) for d in _DIMENSIONS if d not in ("source_format", "source")],
        *_SUMMED,
        "x_Slice",
        F.when(mode != MODE_EFFECTIVE, c("batch_id")).alias("x_BilledBatchId"),
        F.when(mode != MODE_BILLED, c("batch_id")).alias("x_EffectiveBatchId"),
        c("_dims")["source_format"].alias("x_SourceFormat"),
        c("_dims")["source"].alias("x_Source"),
        "x_SourceRowCount",
        c("_lineage")["topic"].alias("x_BronzeTopic"),
        c("_lineage")["partition"].alias("x_BronzePartition"),
        c("_lineage")["offset"].alias("x_BronzeOffset"),
        c("batch_id").alias("x_BatchId"),
        c("_lineage")["bronze_run_id"].alias("x_BronzeRunId"),
        F.lit(run_id).alias("x_RunId"),
        F.lit(now).cast("timestamp").alias("x_UpdatedAt"),
        F.date_format(c("x_ChargeDate"), "yyyy-MM").alias("x_ChargeMonth"),
        "_mode",
        "_additive",
    )
    return out.select(*[f.name for f in SILVER_COSTS.schema], "_mode", "_additive")


def quarantine(invalid: DataFrame, *, run_id: str, now: datetime | None = None) -> DataFrame:
    """Pure transform: failing rows -> SILVER_QUARANTINE.schema rows with the rule(s) and the raw row as received."""
    now = now or datetime.now(UTC)
    c = F.col
    return invalid.select(
        c("_rules")[0].alias("rule"),
        c("_rules").alias("rules"),
        c("_raw_row").alias("raw_row"),
        c("source_format"),
        c("source"),
        c("metric"),
        c("row_index"),
        c("topic"),
        c("partition"),
        c("offset"),
        c("batch_id"),
        c("bronze_run_id"),
        F.lit(run_id).alias("run_id"),
        F.lit(now).cast("timestamp").alias("quarantined_at"),
        F.lit(now).cast("timestamp").cast("date").alias("quarantine_date"),
    )


def explode(bronze: DataFrame) -> DataFrame:
    """Bronze rows (whole payloads) -> one staging row per source row, parsed in Python workers via Arrow."""
    return bronze.mapInArrow(explode_batches, STAGING_SPARK_SCHEMA)


# --- writes -------------------------------------------------------------------------------------
@dataclass
class SilverWrite:
    upserted: int = 0
    deleted_or_cleared: int = 0
    source_rows: int = 0  # source rows summed into the written rows (valid rows less superseded ones)
    months: set[str] = field(default_factory=set)
    # Charge days (ISO) per month whose existing silver slices were merged (appended new days are not listed).
    touched_days: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Slices:
    """What one mode's rows cover: one small aggregate on the driver."""

    slices: list[str]
    replacing: list[str]  # slices some replacing unit delivered (an adding part file replaces nothing)
    months: list[str]
    batches: list[str]
    rows: int
    source_rows: int


def _slices(part: DataFrame, batch_col: str) -> _Slices:
    row = part.agg(
        F.collect_set("x_Slice").alias("slices"),
        F.collect_set(F.when(~F.col("_additive"), F.col("x_Slice"))).alias("replacing"),
        F.collect_set("x_ChargeMonth").alias("months"),
        F.collect_set(batch_col).alias("batches"),
        F.count(F.lit(1)).alias("n"),
        F.sum("x_SourceRowCount").alias("source_rows"),
    ).first()
    return _Slices(
        sorted(row["slices"]),
        sorted(row["replacing"]),
        sorted(row["months"]),
        sorted(row["batches"]),
        row["n"],
        int(row["source_rows"] or 0),
    )


def _stored_slices(spark: SparkSession, lake: Lake, part: DataFrame, months: list[str]) -> list[str]:
    """Which of these rows' (family, scope, day) slices silver already holds (their months only are read)."""
    if not lake.exists(SILVER_COSTS.name):
        return []
    stored = delta.read(
        spark, lake, SILVER_COSTS.name, SILVER_COSTS.schema, where=f"x_ChargeMonth IN ({sql_list(months)})"
    )
    found = stored.select("x_Slice").distinct().join(part.select("x_Slice").distinct(), "x_Slice", "left_semi")
    return sorted(r[0] for r in found.collect())


def write_silver(spark: SparkSession, lake: Lake, rows: DataFrame, modes: list[str]) -> SilverWrite:
    """Write transformed silver rows (with `_mode`) into silver/costs, mode by mode.

    Semantics: match on SILVER_COSTS.key (null-safe). A FOCUS row sets every column; an actual report
    sets BilledCost (and dimensions) only, an amortized report EffectiveCost only. Within the
    (family, scope, day) slices present in the new rows, target rows last set by another batch and
    absent from the new data were re-rated away: their cost is cleared, and the row deleted when
    no cost is left. An amortized report updates only EffectiveCost on rows that already exist.
    Slices silver has never held (a first load, a new day) are appended: nothing to match, nothing stale.
    Every row already carries its run id (x_RunId).
    """
    result = SilverWrite()
    ensure_table(lake, SILVER_COSTS.name, SILVER_COSTS.schema, SILVER_COSTS.partition_by)
    # Gold recomputes only the charge days an increment touched; a first load (or rebuild) has every
    # day of its months new, so it lists none and gold computes those months whole.
    first_load = lake.count(SILVER_COSTS.name) == 0
    for mode in [m for m in (MODE_BOTH, MODE_BILLED, MODE_EFFECTIVE) if m in modes]:
        part = rows.where(F.col("_mode") == mode).drop("_mode")
        batch_col = "x_EffectiveBatchId" if mode == MODE_EFFECTIVE else "x_BilledBatchId"
        if lake.count(SILVER_COSTS.name) == 0:
            # Nothing stored: nothing to match and nothing stale, so the rows are appended without first
            # listing their slices. Listing them computed the whole transform a second time (its repeated
            # key aggregate included) only to learn that; the table now holds exactly these rows.
            n, source_rows, months = _append_first(spark, lake, part.drop("_additive"))
            result.months.update(months)
            result.source_rows += source_rows
            result.upserted += n
            log.info("silver first load (%s): %s rows appended", mode, n)
            continue
        covered = _slices(part, batch_col)
        part = part.drop("_additive")
        slices, months, batches, n, source_rows = (
            covered.slices,
            covered.months,
            covered.batches,
            covered.rows,
            covered.source_rows,
        )
        if not n:
            continue
        result.months.update(months)
        result.source_rows += source_rows
        result.upserted += n
        if not first_load:
            for day in sorted({s.rsplit("|", 1)[1] for s in slices} - set(_flat(result.touched_days))):
                result.touched_days.setdefault(day[:7], []).append(day)
        stored = _stored_slices(spark, lake, part, months)
        if not stored:
            delta.append(part, lake, SILVER_COSTS.name, SILVER_COSTS.schema, SILVER_COSTS.partition_by)
            log.info("silver append (%s): %s rows, %s new slices", mode, n, len(slices))
            continue
        if mode == MODE_BOTH:
            update_columns, other_cost, cleared = None, None, {}
        elif mode == MODE_BILLED:
            update_columns = [
                f.name for f in SILVER_COSTS.schema if f.name not in ("EffectiveCost", "x_EffectiveBatchId")
            ]
            other_cost, cleared = "EffectiveCost", {"BilledCost": "NULL", "x_BilledBatchId": "NULL"}
        else:
            # The actual report is the authority for dimensions and lineage (it also holds purchases);
            # the amortized one contributes its cost, or inserts amortized-only rows (unused commitments).
            update_columns = ["EffectiveCost", "x_EffectiveBatchId", "x_RunId", "x_UpdatedAt"]
            other_cost, cleared = "BilledCost", {"EffectiveCost": "NULL", "x_EffectiveBatchId": "NULL"}
        in_months = f"x_ChargeMonth IN ({sql_list(months)})"
        metrics = delta.merge(
            spark,
            lake,
            SILVER_COSTS.name,
            conform(part, SILVER_COSTS.schema),
            keys=SILVER_COSTS.key,
            update_columns=update_columns,
            target_predicate=f"t.{in_months}",
        )
        # Then the rows of the replaced slices the new data did not re-send. After the upsert every row
        # it matched or inserted carries one of the data's batch ids, so "another batch" is exactly what
        # a NOT MATCHED BY SOURCE clause would select; the month predicate prunes both scans. A part
        # file that adds to a delivery replaces nothing.
        replaced = sorted(set(stored) & set(covered.replacing))
        removed = 0
        if replaced:
            batches_in = sql_list(batches)
            # Rows last set by another batch (on the MERGE's target `t`, then as a plain predicate).
            other = f"(t.{batch_col} IS NULL OR t.{batch_col} NOT IN ({batches_in}))"
            removed = delta.delete_in(
                spark,
                lake,
                SILVER_COSTS.name,
                "x_Slice",
                replaced,
                where=other if other_cost is None else f"{other} AND t.{other_cost} IS NULL",
                target_predicate=f"t.{in_months}",
            )
            if cleared:
                stale = (
                    f"{in_months} AND x_Slice IN ({sql_list(replaced)}) AND "
                    f"({batch_col} IS NULL OR {batch_col} NOT IN ({batches_in}))"
                )
                removed += delta.update(spark, lake, SILVER_COSTS.name, cleared, stale)
        result.deleted_or_cleared += removed
        log.info(
            "silver merge (%s): %s rows, %s slices (%s stored), %s stale rows removed or cleared, metrics %s",
            mode,
            n,
            len(slices),
            len(stored),
            removed,
            metrics,
        )
    return result


def _append_first(spark: SparkSession, lake: Lake, part: DataFrame) -> tuple[int, int, list[str]]:
    """Append `part` to the empty silver table; its rows, source rows and months, read back from the table
    (three narrow columns) rather than computed from `part` again."""
    delta.append(part, lake, SILVER_COSTS.name, SILVER_COSTS.schema, SILVER_COSTS.partition_by)
    row = (
        delta.read(spark, lake, SILVER_COSTS.name, SILVER_COSTS.schema)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("x_SourceRowCount").alias("source_rows"),
            F.collect_set("x_ChargeMonth").alias("months"),
        )
        .first()
    )
    return row["n"], int(row["source_rows"] or 0), sorted(row["months"])


def _flat(days: dict[str, list[str]]) -> list[str]:
    return [d for ds in days.values() for d in ds]


def record_progress(lake: Lake, progress: tuple[str, int], *, run_id: str) -> None:
    """Record that silver has processed bronze up to a version: its own (empty) commit after every write,
    so a run killed half way leaves it unrecorded and the rerun repeats every (idempotent) step."""
    lake.append(
        SILVER_COSTS.name,
        SILVER_COSTS.schema.empty_table(),
        run_id=run_id,
        app_transaction=progress,
        partition_by=SILVER_COSTS.partition_by,
    )


def merge_quarantine(spark: SparkSession, lake: Lake, rows: DataFrame) -> None:
    """Quarantine MERGEs on the source row's position, so reprocessing bronze never duplicates it."""
    ensure_table(lake, SILVER_QUARANTINE.name, SILVER_QUARANTINE.schema)
    delta.merge(
        spark, lake, SILVER_QUARANTINE.name, conform(rows, SILVER_QUARANTINE.schema), keys=SILVER_QUARANTINE.key
    )
