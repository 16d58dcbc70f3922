"""The lake-wide table catalogue: one spec per Delta table (name, Arrow schema, partitioning, key, write disposition).

Ingest, the Spark jobs, the mart loader and analytics import these specs rather than spelling a table's
path, partition columns or key at their call sites: the catalogue is the contract between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

# Money and quantities are exact decimals end to end: 16 integer digits, 12 decimals (Azure prices
# carry up to 10+ decimals). Sums widen to decimal(38, 12).
MONEY = pa.decimal128(28, 12)
MONEY_SQL = "DECIMAL(28,12)"
UTC_TS = pa.timestamp("us", tz="UTC")
ALLOCATED = pa.decimal128(38, 12)
TAGS = pa.map_(pa.string(), pa.string())


class Write(StrEnum):
    """How a table is written: said once here, so no writer appends or overwrites by accident."""

    APPEND = "append"  # rows as received, never rewritten (idempotent on the key through app transactions)
    MERGE = "merge"  # one row per key: new rows insert, matched rows update
    REPLACE_PARTITIONS = "replace-partitions"  # the affected partitions replaced in one commit
    REPLACE = "replace"  # small tables, rewritten whole on every run


@dataclass(frozen=True)
class TableSpec:
    """One Delta table of the lake: where it lives under the lake root, its columns and how it is written."""

    name: str  # e.g. "gold/cost_daily", relative to the lake root
    schema: pa.Schema
    write: Write
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # the business key (MERGE's match, or what makes a row unique)

    @property
    def layer(self) -> str:
        return self.name.split("/", 1)[0]


# --- bronze ---------------------------------------------------------------------------------
# One row per Kafka message, payload exactly as received; idempotent on (topic, partition, offset).
BRONZE_COST_RECORDS = TableSpec(
    name="bronze/cost_records",
    write=Write.APPEND,
    partition_by=("ingest_date",),
    key=("topic", "partition", "offset"),
    schema=pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("kafka_key", pa.string()),
            ("kafka_timestamp", UTC_TS),
            ("schema_version", pa.int32()),
            ("source", pa.string()),
            ("format", pa.string()),  # backend.sources.base.PayloadFormat
            ("content_type", pa.string()),  # backend.sources.base.ContentType
            ("batch_id", pa.string()),
            ("fetched_at", UTC_TS),
            ("meta", pa.string()),  # JSON object of strings (RawChunk.meta)
            ("payload", pa.binary()),
            ("ingested_at", UTC_TS),
            ("run_id", pa.string()),
            ("ingest_date", pa.date32()),  # partition column
        ]
    ),
)

# A message that could not be decoded: kept whole so nothing is lost, and the loop goes on.
BRONZE_DEAD_LETTERS = TableSpec(
    name="bronze/dead_letters",
    write=Write.APPEND,
    partition_by=("ingest_date",),
    key=("topic", "partition", "offset"),
    schema=pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("kafka_key", pa.binary()),
            ("raw_value", pa.binary()),
            ("error", pa.string()),
            ("ingested_at", UTC_TS),
            ("run_id", pa.string()),
            ("ingest_date", pa.date32()),
        ]
    ),
)

# --- silver (FOCUS column names, `x_` for Costlake / Azure extensions) -----------------------
# Granularity families of the same money, best first: when a (subscription, day) has rows from
# several families, gold keeps only the best one so Query API aggregates never add to detail rows
# (the mart's reconciliation applies the same rule to silver).
FAMILY_RANK = {"azure_detail": 3, "focus": 2, "azure_query": 1}

# Silver grain: one row per natural key and charge day. Azure detail reports arrive as separate
# ActualCost / AmortizedCost reports of the same rows: both land on the same silver row (BilledCost
# from the actual report, EffectiveCost from the amortized one); FOCUS rows carry both.
SILVER_COSTS = TableSpec(
    name="silver/costs",
    write=Write.MERGE,
    partition_by=("x_ChargeMonth",),
    key=(
        "x_SourceFamily",
        "SubAccountId",
        "x_ChargeDate",
        "ResourceId",
        "x_MeterId",
        "ServiceName",
        "ChargeCategory",
        "x_PricingModel",
        "CommitmentDiscountId",
        "x_ResourceGroupName",
        "BillingCurrency",
        "x_DeliveryPart",
    ),
    schema=pa.schema(
        [
            # --- natural key -------------------------------------------------------------------
            ("x_SourceFamily", pa.string()),  # azure_detail | focus | azure_query (granularity family)
            # Subscription, one spelling whatever the source: "/subscriptions/<lower-case guid>" (the FOCUS /
            # ARM form; Azure reports' bare guids are rewritten to it). A non-Azure id is kept as sent, trimmed.
            ("SubAccountId", pa.string()),
            ("x_ChargeDate", pa.date32()),
            ("ResourceId", pa.string()),  # lower-cased ARM id
            ("x_MeterId", pa.string()),
            ("ServiceName", pa.string()),
            ("ChargeCategory", pa.string()),
            ("x_PricingModel", pa.string()),  # OnDemand / Reservation / SavingsPlan / Spot
            ("CommitmentDiscountId", pa.string()),
            ("x_ResourceGroupName", pa.string()),
            ("BillingCurrency", pa.string()),
            # --- FOCUS dimensions ----------------------------------------------------------------
            ("ChargePeriodStart", UTC_TS),
            ("ChargePeriodEnd", UTC_TS),
            ("BillingAccountId", pa.string()),
            ("BillingAccountName", pa.string()),
            ("SubAccountName", pa.string()),
            ("ResourceName", pa.string()),
            ("ResourceType", pa.string()),
            ("RegionName", pa.string()),
            ("ServiceCategory", pa.string()),
            ("ChargeClass", pa.string()),
            ("ChargeDescription", pa.string()),
            ("PricingCategory", pa.string()),  # FOCUS: Standard / Committed / Dynamic / Other
            ("CommitmentDiscountType", pa.string()),
            ("PricingUnit", pa.string()),
            ("x_MeterCategory", pa.string()),
            ("x_MeterSubCategory", pa.string()),
            ("x_MeterName", pa.string()),
            ("Tags", TAGS),  # keys trimmed and case-folded, values trimmed
            # --- money and quantities (exact decimals) -----------------------------------------
            ("PricingQuantity", MONEY),
            ("BilledCost", MONEY),  # actual (null until an actual report / FOCUS row covers the key)
            ("EffectiveCost", MONEY),  # amortized (null until an amortized report / FOCUS row covers it)
            ("ListCost", MONEY),
            ("ContractedCost", MONEY),
            # --- replacement slices and lineage ------------------------------------------------
            ("x_Slice", pa.string()),  # "<family>|<scope>|<day>": what a newer report of that scope replaces
            ("x_BilledBatchId", pa.string()),  # batch that set BilledCost
            ("x_EffectiveBatchId", pa.string()),  # batch that set EffectiveCost
            ("x_SourceFormat", pa.string()),  # PayloadFormat of the last write
            ("x_Source", pa.string()),  # RawChunk.source of the last write
            ("x_SourceRowCount", pa.int64()),  # source rows summed into this row by the last write
            ("x_BronzeTopic", pa.string()),
            ("x_BronzePartition", pa.int32()),
            ("x_BronzeOffset", pa.int64()),  # first Kafka message (min offset) of the rows summed
            ("x_BatchId", pa.string()),
            ("x_BronzeRunId", pa.string()),
            ("x_RunId", pa.string()),  # medallion run that last wrote the row
            ("x_UpdatedAt", UTC_TS),
            ("x_ChargeMonth", pa.string()),  # "YYYY-MM", partition column
            # --- added later (new columns go last: existing tables gain them at the end) ---------
            # The file a row came from (first 16 hex of its sha256), null for API pulls: part files of one
            # delivery may repeat a natural key, and each part's rows must stay (see silver.write_silver).
            ("x_DeliveryPart", pa.string()),
            # FOCUS 1.0-1.3 columns (Azure reports fill what they have; null otherwise).
            (
                "ProviderName",
                pa.string(),
            ),  # the cloud: 1.3's HostProviderName, else ProviderName ("Microsoft" for Azure)
            ("PublisherName", pa.string()),
            ("InvoiceIssuerName", pa.string()),
            ("ServiceProviderName", pa.string()),  # 1.3; ProviderName in earlier versions
            ("HostProviderName", pa.string()),
            ("BillingAccountType", pa.string()),
            ("SubAccountType", pa.string()),
            ("InvoiceId", pa.string()),
            ("PricingCurrency", pa.string()),
            ("PricingCurrencyEffectiveCost", MONEY),
            ("PricingCurrencyListUnitPrice", MONEY),
            ("PricingCurrencyContractedUnitPrice", MONEY),
            ("CommitmentDiscountCategory", pa.string()),
            ("CommitmentDiscountName", pa.string()),
            ("CommitmentDiscountStatus", pa.string()),
            ("CommitmentDiscountQuantity", MONEY),
            ("CommitmentDiscountUnit", pa.string()),
            ("CapacityReservationId", pa.string()),
            ("CapacityReservationStatus", pa.string()),
            ("SkuId", pa.string()),
            ("SkuPriceId", pa.string()),
            ("SkuMeter", pa.string()),
            ("ServiceSubcategory", pa.string()),
            ("AllocatedMethodId", pa.string()),
            ("AllocatedMethodDetails", pa.string()),
            ("AllocatedResourceId", pa.string()),
            ("AllocatedResourceName", pa.string()),
            ("AllocatedTags", pa.string()),  # JSON text as delivered
        ]
    ),
)

# A source row (or a whole undecodable message) that failed validation: the rule(s) and the raw row.
SILVER_QUARANTINE = TableSpec(
    name="silver/quarantine",
    write=Write.MERGE,
    key=("topic", "partition", "offset", "row_index"),
    schema=pa.schema(
        [
            ("rule", pa.string()),  # first failing rule
            ("rules", pa.list_(pa.string())),  # every failing rule
            ("raw_row", pa.string()),  # JSON object of the row's fields as received (strings)
            ("source_format", pa.string()),
            ("source", pa.string()),
            ("metric", pa.string()),
            ("row_index", pa.int64()),  # position of the row in its payload (-1: the whole message)
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("batch_id", pa.string()),
            ("bronze_run_id", pa.string()),
            ("run_id", pa.string()),
            ("quarantined_at", UTC_TS),
            ("quarantine_date", pa.date32()),  # day it was quarantined (the table is small: not partitioned)
        ]
    ),
)

# Imported FX rates (backend/sources/fx.py): `rate` converts one unit of from_currency into to_currency
# for a month, one row per (rate_month, from_currency, to_currency), partitioned by rate_month. Gold
# converts with the rates whose to_currency is the reporting currency; *_converted is null without one.
SILVER_FX_RATES = TableSpec(
    name="silver/fx_rates",
    write=Write.REPLACE_PARTITIONS,
    partition_by=("rate_month",),
    key=("rate_month", "from_currency", "to_currency"),
    schema=pa.schema(
        [
            ("rate_month", pa.string()),  # "YYYY-MM", partition column
            ("from_currency", pa.string()),
            ("to_currency", pa.string()),
            ("rate", MONEY),
            # --- added later (at the end) ---------------------------------------------------------------
            (
                "rate_date",
                pa.date32(),
            ),  # the file's latest date in the month for the pair (a month's rate: its last day)
        ]
    ),
)

# --- gold (recomputed for the affected charge months) ----------------------------------------
# Daily cost at the grain the mart's fact table keeps; partitioned by month so a run replaces only
# the months it touched. Dimension columns are never null: unknown values are "" (the mart's
# "(none)" member), so keys stay stable and joins never drop rows.
GOLD_COST_DAILY = TableSpec(
    name="gold/cost_daily",
    write=Write.REPLACE_PARTITIONS,
    partition_by=("charge_month",),
    schema=pa.schema(
        [
            ("charge_date", pa.date32()),
            ("billing_account_id", pa.string()),
            ("billing_account_name", pa.string()),
            ("subscription_id", pa.string()),  # silver SubAccountId: "/subscriptions/<guid>"
            ("subscription_name", pa.string()),
            ("resource_group", pa.string()),
            ("resource_id", pa.string()),
            ("resource_name", pa.string()),
            ("resource_type", pa.string()),
            ("region", pa.string()),
            ("service_name", pa.string()),
            ("service_category", pa.string()),
            ("meter_category", pa.string()),
            ("meter_name", pa.string()),
            ("pricing_model", pa.string()),  # OnDemand / Reservation / SavingsPlan / Spot
            ("charge_category", pa.string()),  # Usage / Purchase / Tax / Credit / Adjustment
            ("billing_currency", pa.string()),
            ("pricing_unit", pa.string()),
            ("actual_cost", MONEY),  # FOCUS BilledCost
            ("amortized_cost", MONEY),  # FOCUS EffectiveCost
            ("list_cost", MONEY),
            ("quantity", MONEY),
            ("actual_cost_converted", MONEY),  # in the reporting currency when a rate exists, else null
            ("source", pa.string()),
            ("row_count", pa.int64()),  # silver rows aggregated into this row
            ("run_id", pa.string()),
            ("charge_month", pa.string()),  # "YYYY-MM", partition column
            # --- added later (at the end: existing tables gain them there) ----------------------------
            ("provider_name", pa.string()),  # the cloud (FOCUS ProviderName / 1.3 HostProviderName)
            ("service_provider_name", pa.string()),
            ("publisher_name", pa.string()),
            ("invoice_issuer_name", pa.string()),
            # Amortized cost in the reporting currency, like actual_cost_converted: null where no rate exists.
            ("amortized_cost_converted", MONEY),
            # Savings (issue 24): FOCUS ContractedCost (null where the source does not carry it, e.g. Azure
            # exports), and EffectiveCost split by CommitmentDiscountStatus: null where no row of the group
            # is covered by a commitment, so utilisation is "not available" rather than 0 without one.
            ("contracted_cost", MONEY),
            ("commitment_used_cost", MONEY),
            ("commitment_unused_cost", MONEY),
        ]
    ),
)

# Resource tags as (key, value) rows, normalised (trimmed, case-folded keys); the mart's tag bridge.
GOLD_RESOURCE_TAGS = TableSpec(
    name="gold/resource_tags",
    write=Write.REPLACE,
    key=("resource_id", "tag_key"),
    schema=pa.schema(
        [
            ("resource_id", pa.string()),
            ("tag_key", pa.string()),
            ("tag_value", pa.string()),
            ("first_seen", pa.date32()),
            ("last_seen", pa.date32()),
            ("run_id", pa.string()),
        ]
    ),
)

# Cost by tag key/value per day and subscription, with "untagged" for resources lacking the key.
GOLD_COST_BY_TAG = TableSpec(
    name="gold/cost_by_tag",
    write=Write.REPLACE_PARTITIONS,
    partition_by=("charge_month",),
    schema=pa.schema(
        [
            ("charge_date", pa.date32()),
            ("subscription_id", pa.string()),
            ("tag_key", pa.string()),
            ("tag_value", pa.string()),  # "untagged" when the resource has no value for tag_key
            ("billing_currency", pa.string()),
            ("actual_cost", MONEY),
            ("amortized_cost", MONEY),
            ("run_id", pa.string()),
            ("charge_month", pa.string()),
        ]
    ),
)

# Monthly roll-up per billing account, subscription and currency.
GOLD_MONTHLY_SUMMARY = TableSpec(
    name="gold/monthly_summary",
    write=Write.REPLACE_PARTITIONS,
    partition_by=("charge_month",),
    schema=pa.schema(
        [
            ("charge_month", pa.string()),  # "YYYY-MM", partition column
            ("billing_account_id", pa.string()),
            ("subscription_id", pa.string()),
            ("subscription_name", pa.string()),
            ("billing_currency", pa.string()),
            ("actual_cost", MONEY),
            ("amortized_cost", MONEY),
            ("list_cost", MONEY),
            ("actual_cost_converted", MONEY),
            ("previous_month_actual_cost", MONEY),  # null when the previous month has no rows
            ("previous_month_amortized_cost", MONEY),
            ("days_with_cost", pa.int32()),
            ("resource_count", pa.int64()),
            ("row_count", pa.int64()),
            ("run_id", pa.string()),
            # --- added later (at the end) ---------------------------------------------------------------
            ("amortized_cost_converted", MONEY),
        ]
    ),
)

# Resources whose cost started (first day after a gap) or stopped (last day before a gap): idle/waste hints.
GOLD_COST_CHANGES = TableSpec(
    name="gold/resource_cost_changes",
    write=Write.REPLACE_PARTITIONS,
    partition_by=("charge_month",),
    schema=pa.schema(
        [
            ("resource_id", pa.string()),
            ("subscription_id", pa.string()),
            ("resource_group", pa.string()),
            ("service_name", pa.string()),
            ("event", pa.string()),  # "started" | "stopped"
            ("event_date", pa.date32()),  # first day with cost (started) / last day with cost (stopped)
            ("daily_cost", MONEY),  # cost on event_date
            ("billing_currency", pa.string()),
            ("run_id", pa.string()),
            ("charge_month", pa.string()),
        ]
    ),
)

# --- allocation (issue 24: tag hygiene, allocation rules, showback; backend/medallion/allocation.py) -----
# Cost per month, currency, owner and source row, with the rule and rules version that produced it (FOCUS 1.3
# AllocatedMethodId / AllocatedMethodDetails); owner null = unallocated (method unmatched / no_basis).
# Replaced whole on each run: a rule change moves every month.
GOLD_COST_ALLOCATION = TableSpec(
    name="gold/cost_allocation",
    write=Write.REPLACE,
    partition_by=("charge_month",),
    schema=pa.schema(
        [
            ("charge_month", pa.string()),  # "YYYY-MM", partition column
            ("billing_currency", pa.string()),
            ("owner", pa.string()),
            ("allocated_method_id", pa.string()),  # the rule id
            ("method", pa.string()),  # direct / split / unmatched / no_basis
            ("share", pa.float64()),  # fraction of the source row this owner took (1 unless split)
            ("subscription_id", pa.string()),
            ("resource_group", pa.string()),
            ("service_name", pa.string()),
            ("resource_id", pa.string()),  # the resource whose cost was allocated
            ("actual_cost", ALLOCATED),
            ("amortized_cost", ALLOCATED),
            ("allocated_method_details", pa.string()),  # JSON: rule, version, match, method, owners / percentages
            ("rules_version", pa.int32()),
            ("run_id", pa.string()),
        ]
    ),
)

# Per month, currency and canonical tag key (aliases and inheritance applied): cost without the key.
GOLD_TAG_COVERAGE = TableSpec(
    name="gold/tag_coverage",
    write=Write.REPLACE,
    schema=pa.schema(
        [
            ("charge_month", pa.string()),
            ("billing_currency", pa.string()),
            ("tag_key", pa.string()),
            ("total_cost", ALLOCATED),
            ("untagged_cost", ALLOCATED),
            ("rules_version", pa.int32()),
            ("run_id", pa.string()),
        ]
    ),
)

# Gold tables replaced per affected charge month, in the order a gold run writes them.
MONTHLY_GOLD = (GOLD_COST_DAILY, GOLD_MONTHLY_SUMMARY, GOLD_COST_BY_TAG, GOLD_COST_CHANGES)

TABLES = (
    BRONZE_COST_RECORDS,
    BRONZE_DEAD_LETTERS,
    SILVER_COSTS,
    SILVER_QUARANTINE,
    SILVER_FX_RATES,
    GOLD_COST_DAILY,
    GOLD_RESOURCE_TAGS,
    GOLD_COST_BY_TAG,
    GOLD_MONTHLY_SUMMARY,
    GOLD_COST_CHANGES,
    GOLD_COST_ALLOCATION,
    GOLD_TAG_COVERAGE,
)

# Tables earlier versions wrote and nothing reads any more; the gold step drops them from an older lake so
# the gold browser does not show them frozen. gold/top_movers: the pages and the agent compute movers for
# any two periods from the mart (backend.mart.queries.top_movers).
RETIRED_TABLES = ("gold/top_movers",)
