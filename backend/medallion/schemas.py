"""Explicit schemas of the lake's tables (the contract between ingest, the Spark jobs and the mart loader)."""

from __future__ import annotations

import pyarrow as pa

# Money and quantities are exact decimals end to end: 16 integer digits, 12 decimals (Azure prices
# carry up to 10+ decimals). Sums widen to decimal(38, 12).
MONEY = pa.decimal128(28, 12)
MONEY_SQL = "DECIMAL(28,12)"
UTC_TS = pa.timestamp("us", tz="UTC")

# --- bronze ---------------------------------------------------------------------------------
BRONZE_COST_RECORDS = "bronze/cost_records"
BRONZE_DEAD_LETTERS = "bronze/dead_letters"

# One row per Kafka message, payload exactly as received; idempotent on (topic, partition, offset).
BRONZE_SCHEMA = pa.schema(
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
)
BRONZE_PARTITION_BY = ["ingest_date"]

# A message that could not be decoded: kept whole so nothing is lost, and the loop goes on.
DEAD_LETTER_SCHEMA = pa.schema(
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
)

# --- silver ---------------------------------------------------------------------------------
SILVER_COSTS = "silver/costs"
SILVER_QUARANTINE = "silver/quarantine"

# --- gold -----------------------------------------------------------------------------------
GOLD_COST_DAILY = "gold/cost_daily"
GOLD_COST_BY_TAG = "gold/cost_by_tag"
GOLD_RESOURCE_TAGS = "gold/resource_tags"
GOLD_MONTHLY_SUMMARY = "gold/monthly_summary"

# Daily cost at the grain the mart's fact table keeps; partitioned by month so a run replaces only
# the months it touched. Dimension columns are never null: unknown values are "" (the mart's
# "(none)" member), so keys stay stable and joins never drop rows.
GOLD_COST_DAILY_SCHEMA = pa.schema(
    [
        ("charge_date", pa.date32()),
        ("billing_account_id", pa.string()),
        ("billing_account_name", pa.string()),
        ("subscription_id", pa.string()),
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
    ]
)

# Resource tags as (key, value) rows, normalised (trimmed, case-folded keys); the mart's tag bridge.
GOLD_RESOURCE_TAGS_SCHEMA = pa.schema(
    [
        ("resource_id", pa.string()),
        ("tag_key", pa.string()),
        ("tag_value", pa.string()),
        ("first_seen", pa.date32()),
        ("last_seen", pa.date32()),
        ("run_id", pa.string()),
    ]
)

# Cost by tag key/value per day and subscription, with "untagged" for resources lacking the key.
GOLD_COST_BY_TAG_SCHEMA = pa.schema(
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
)
