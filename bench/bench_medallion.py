"""Bronze -> silver -> gold with the Spark jobs against the same silver + gold logic in DuckDB SQL over the same payloads."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa

from bench.common import BenchResult, PeakMemory, timed

log = logging.getLogger("bench.medallion")

# The DuckDB reference: the same typing, validation, per-key sums and gold aggregates as the Spark
# jobs, for FOCUS payloads (what the synthetic estate produces).
DUCKDB_SILVER = """
CREATE OR REPLACE TABLE staged AS
SELECT *, CAST(NULLIF(NULLIF(CAST(BilledCost AS VARCHAR), ''), 'NULL') AS DECIMAL(28,12)) AS billed,
       CAST(NULLIF(NULLIF(CAST(EffectiveCost AS VARCHAR), ''), 'NULL') AS DECIMAL(28,12)) AS effective,
       CAST(ChargePeriodStart AS DATE) AS charge_date,
       TRY_CAST(json(NULLIF(Tags, 'NULL')) AS MAP(VARCHAR, VARCHAR)) AS tag_map
FROM read_parquet('{glob}', filename = true);

CREATE OR REPLACE TABLE quarantine AS
SELECT * FROM staged
WHERE charge_date IS NULL OR billed IS NULL OR effective IS NULL OR BillingCurrency IS NULL
   OR (SubAccountId IS NULL AND BillingAccountId IS NULL);

CREATE OR REPLACE TABLE silver AS
SELECT 'focus' AS family, SubAccountId, charge_date, lower(trim(ResourceId)) AS ResourceId, x_MeterId, ServiceName,
       ChargeCategory, x_PricingModel, PricingCategory, CommitmentDiscountType,
       lower(CommitmentDiscountId) AS CommitmentDiscountId,
       lower(x_ResourceGroupName) AS rg, upper(BillingCurrency) AS BillingCurrency,
       max(BillingAccountId) AS BillingAccountId, max(SubAccountName) AS SubAccountName,
       max(ResourceName) AS ResourceName, max(ResourceType) AS ResourceType, max(RegionName) AS RegionName,
       max(ServiceCategory) AS ServiceCategory, max(x_MeterCategory) AS x_MeterCategory,
       max(x_MeterName) AS x_MeterName, max(PricingUnit) AS PricingUnit,
       map_from_entries(list_transform(map_entries(any_value(tag_map)),
           lambda e: struct_pack(key := lower(trim(e.key)), value := trim(e.value)))) AS tags,
       sum(billed)::DECIMAL(28,12) AS billed, sum(effective)::DECIMAL(28,12) AS effective,
       sum(CAST(PricingQuantity AS DECIMAL(28,12)))::DECIMAL(28,12) AS quantity,
       sum(CAST(ListCost AS DECIMAL(28,12)))::DECIMAL(28,12) AS list_cost, count(*) AS n
FROM staged
WHERE NOT (charge_date IS NULL OR billed IS NULL OR effective IS NULL OR BillingCurrency IS NULL
           OR (SubAccountId IS NULL AND BillingAccountId IS NULL))
GROUP BY ALL;
"""

DUCKDB_GOLD = """
COPY (
  SELECT charge_date, coalesce(BillingAccountId, '') AS billing_account_id, coalesce(SubAccountId, '') AS subscription_id,
         coalesce(SubAccountName, '') AS subscription_name, coalesce(rg, '') AS resource_group,
         coalesce(ResourceId, '') AS resource_id, coalesce(ResourceName, '') AS resource_name,
         coalesce(ResourceType, '') AS resource_type, coalesce(RegionName, '') AS region,
         coalesce(ServiceName, '') AS service_name, coalesce(ServiceCategory, '') AS service_category,
         coalesce(x_MeterCategory, '') AS meter_category, coalesce(x_MeterName, '') AS meter_name,
         coalesce(x_PricingModel, '') AS pricing_model, coalesce(ChargeCategory, '') AS charge_category,
         BillingCurrency AS billing_currency, coalesce(PricingUnit, '') AS pricing_unit,
         sum(billed)::DECIMAL(28,12) AS actual_cost, sum(effective)::DECIMAL(28,12) AS amortized_cost,
         sum(list_cost)::DECIMAL(28,12) AS list_cost, sum(quantity)::DECIMAL(28,12) AS quantity,
         count(*) AS row_count, strftime(charge_date, '%Y-%m') AS charge_month
  FROM silver GROUP BY ALL
) TO '{out}/cost_daily.parquet' (FORMAT parquet);

CREATE OR REPLACE TABLE daily AS SELECT * FROM read_parquet('{out}/cost_daily.parquet');

COPY (
  WITH m AS (
    SELECT charge_month, billing_account_id, subscription_id, billing_currency, max(subscription_name) AS subscription_name,
           sum(actual_cost) AS actual_cost, sum(amortized_cost) AS amortized_cost, count(DISTINCT charge_date) AS days,
           count(DISTINCT nullif(resource_id, '')) AS resources, sum(row_count) AS row_count
    FROM daily GROUP BY ALL)
  SELECT m.*, p.actual_cost AS previous_month_actual_cost
  FROM m LEFT JOIN m p ON p.charge_month = strftime(CAST(m.charge_month || '-01' AS DATE) - INTERVAL 1 MONTH, '%Y-%m')
     AND p.billing_account_id = m.billing_account_id AND p.subscription_id = m.subscription_id
     AND p.billing_currency = m.billing_currency
) TO '{out}/monthly_summary.parquet' (FORMAT parquet);

COPY (
  WITH base AS (SELECT charge_date, coalesce(SubAccountId, '') AS sub, BillingCurrency AS cur,
                       strftime(charge_date, '%Y-%m') AS month, tags, billed, effective FROM silver),
  tagged AS (SELECT charge_date, sub, cur, month, e.key AS tag_key, e.value AS tag_value, billed, effective
             FROM base, unnest(map_entries(tags)) AS t(e)),
  totals AS (SELECT charge_date, sub, cur, month, sum(billed) AS tb, sum(effective) AS te, count(*) AS tn FROM base GROUP BY ALL),
  per_key AS (SELECT charge_date, sub, cur, month, tag_key, sum(billed) AS kb, sum(effective) AS ke, count(*) AS kn
              FROM tagged GROUP BY ALL),
  keys AS (SELECT DISTINCT month, tag_key FROM tagged)
  SELECT charge_date, sub, tag_key, tag_value, cur, sum(billed) AS actual_cost, sum(effective) AS amortized_cost
  FROM tagged GROUP BY ALL
  UNION ALL
  SELECT t.charge_date, t.sub, k.tag_key, 'untagged', t.cur, t.tb - coalesce(p.kb, 0), t.te - coalesce(p.ke, 0)
  FROM totals t JOIN keys k USING (month)
  LEFT JOIN per_key p ON p.charge_date = t.charge_date AND p.sub = t.sub AND p.cur = t.cur AND p.tag_key = k.tag_key
  WHERE t.tn > coalesce(p.kn, 0)
) TO '{out}/cost_by_tag.parquet' (FORMAT parquet);

COPY (
  WITH d AS (SELECT resource_id, charge_date, lag(charge_date) OVER w AS prev, lead(charge_date) OVER w AS next
             FROM (SELECT resource_id, charge_date FROM daily WHERE resource_id <> '' GROUP BY ALL)
             WINDOW w AS (PARTITION BY resource_id ORDER BY charge_date)),
  b AS (SELECT min(charge_date) AS first, max(charge_date) AS last FROM daily)
  SELECT resource_id, charge_date, 'started' AS event FROM d, b
   WHERE charge_date > first AND (prev IS NULL OR prev < charge_date - 1)
  UNION ALL
  SELECT resource_id, charge_date, 'stopped' FROM d, b
   WHERE charge_date < last AND (next IS NULL OR next > charge_date + 1)
) TO '{out}/resource_cost_changes.parquet' (FORMAT parquet);
"""


def build_bronze(lake, rows: int, *, settings, start: date = date(2025, 1, 1), months: int = 3) -> tuple[int, int]:
    """Synthetic estate -> FOCUS Parquet chunks -> bronze rows (as ingest would write them)."""
    from backend.demo.estate import SyntheticSource, generate_estate
    from backend.lake.catalog import BRONZE_COST_RECORDS
    from backend.sources.cursors import MemoryCursorStore

    estate = generate_estate(seed=7, start=start, months=months, target_rows=rows)
    source = SyntheticSource(settings, estate, cursors=MemoryCursorStore())
    now = datetime.now(UTC)
    batch = f"bench-{uuid.uuid4().hex[:8]}"
    records = []
    for offset, chunk in enumerate(source.fetch(batch)):
        records.append(
            {
                "topic": settings.kafka_topic_costs,
                "partition": offset % 6,
                "offset": offset,
                "kafka_key": chunk.key,
                "kafka_timestamp": now,
                "schema_version": 1,
                "source": chunk.source,
                "format": str(chunk.format),
                "content_type": str(chunk.content_type),
                "batch_id": batch,
                "fetched_at": now,
                "meta": json.dumps(chunk.meta),
                "payload": chunk.payload,
                "ingested_at": now,
                "run_id": "bench",
                "ingest_date": now.date(),
            }
        )
    lake.append(
        BRONZE_COST_RECORDS.name,
        pa.Table.from_pylist(records, schema=BRONZE_COST_RECORDS.schema),
        partition_by=BRONZE_COST_RECORDS.partition_by,
    )
    return estate.costs.num_rows, len(records)


def run_duckdb(lake, workdir: Path) -> dict[str, float]:
    """The DuckDB reference over the same bronze: payloads to Parquet files, then the SQL above."""
    import duckdb

    from backend.lake.catalog import BRONZE_COST_RECORDS

    payload_dir = workdir / "payloads"
    out = workdir / "gold"
    payload_dir.mkdir(parents=True)
    out.mkdir(parents=True)
    with timed() as t_extract:
        bronze = lake.read_arrow(BRONZE_COST_RECORDS.name, columns=["offset", "payload"])
        for offset, payload in zip(bronze["offset"].to_pylist(), bronze["payload"].to_pylist(), strict=True):
            (payload_dir / f"{offset}.parquet").write_bytes(payload)
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET enable_progress_bar = false")
    with timed() as t_silver:
        con.execute(DUCKDB_SILVER.format(glob=payload_dir / "*.parquet"))
    with timed() as t_gold:
        con.execute(DUCKDB_GOLD.format(out=out))
    silver_rows = con.execute("SELECT count(*) FROM silver").fetchone()[0]
    con.close()
    return {
        "extract_s": t_extract.seconds,
        "silver_s": t_silver.seconds,
        "gold_s": t_gold.seconds,
        "total_s": t_extract.seconds + t_silver.seconds + t_gold.seconds,
        "silver_rows": silver_rows,
    }


def main(quick: bool = False, sizes: list[int] | None = None) -> None:
    from backend.config import Settings
    from backend.lake import lake_from_settings
    from backend.runtime.spark import get_spark
    from tests.medallion.helpers import run_medallion

    sizes = sizes or ([50_000] if quick else [1_000_000, 5_000_000])
    result = BenchResult(
        "medallion",
        "bronze (FOCUS Parquet chunks of the synthetic estate) -> silver -> gold: Spark jobs vs DuckDB SQL reference",
    )
    root = Path(tempfile.mkdtemp(prefix="bench-medallion-"))
    try:
        base = Settings(_env_file=None, app_env="test", data_dir=root / "spark")
        spark = get_spark(base)
        for rows in sizes:
            settings = Settings(
                _env_file=None, app_env="test", data_dir=root / f"n{rows}", lake_uri=str(root / f"n{rows}" / "lake")
            )
            lake = lake_from_settings(settings)
            with timed() as t_build:
                source_rows, messages = build_bronze(lake, rows, settings=settings)
            log.info("bronze: %s rows in %s messages (%.1fs)", source_rows, messages, t_build.seconds)
            with PeakMemory() as mem, timed() as t_spark:
                stats = run_medallion(settings, lake, spark, run_id=f"bench-{rows}")
            duck = run_duckdb(lake, root / f"duck{rows}")
            ratio = t_spark.seconds / duck["total_s"] if duck["total_s"] else None
            result.rows.append(
                {
                    "rows": source_rows,
                    "messages": messages,
                    "spark_s": round(t_spark.seconds, 2),
                    "spark_silver_s": stats.seconds.get("silver_compute", 0) + stats.seconds.get("silver_write", 0),
                    "spark_gold_s": stats.seconds.get("gold"),
                    "spark_rows_per_s": round(source_rows / t_spark.seconds),
                    "duckdb_s": round(duck["total_s"], 2),
                    "duckdb_rows_per_s": round(source_rows / duck["total_s"]),
                    "ratio_spark_over_duckdb": round(ratio, 2) if ratio else None,
                    "silver_rows_spark": lake.count("silver/costs"),
                    "silver_rows_duckdb": duck["silver_rows"],
                    "quarantined": stats.quarantined,
                    "peak_rss_gb": mem.peak_gb,
                }
            )
            log.info("result %s", result.rows[-1])
            result.write()  # after every size: a long run that is cut short still leaves its numbers
        result.notes += [
            "Spark: the silver and gold steps' jobs (run_silver, run_gold) on a fresh local lake (first load: silver create, gold written per month).",
            "DuckDB: payload blobs written out as Parquet files (counted), then the same typing, validation, "
            "per-key sums and gold tables (daily, monthly, by tag incl. untagged, start/stop) "
            "in SQL with 2 threads; no Delta commits, no lineage columns, no quarantine table write.",
            "Measured on a 2-core machine shared with other sessions; absolute times are noisy.",
        ]
        result.write()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(quick=True)
