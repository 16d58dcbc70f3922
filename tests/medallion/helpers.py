"""Builders for small bronze rows: Azure EA/MCA CSV, Query API JSON pages and FOCUS Parquet payloads."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from backend.lake.catalog import BRONZE_COST_RECORDS

EA_HEADER = [
    "BillingAccountId", "SubscriptionId", "SubscriptionName", "Date", "MeterCategory", "MeterSubCategory", "MeterName",
    "MeterId", "Quantity", "EffectivePrice", "CostInBillingCurrency", "UnitPrice", "BillingCurrency",
    "ResourceLocation", "ResourceId", "ResourceGroup", "Tags", "ChargeType", "PricingModel", "ReservationId",
]  # fmt: skip


def ea_row(
    day: str, resource: str, cost: str, *, sub: str = "sub-1", meter: str = "m-1", tags: str = "", **extra
) -> dict:
    row = {
        "BillingAccountId": "ba-1",
        "SubscriptionId": sub,
        "SubscriptionName": f"name-{sub}",
        "Date": day,
        "MeterCategory": "Virtual Machines",
        "MeterSubCategory": "Dsv5",
        "MeterName": "D4s v5",
        "MeterId": meter,
        "Quantity": "24",
        "EffectivePrice": "0.2",
        "CostInBillingCurrency": cost,
        "UnitPrice": "0.2",
        "BillingCurrency": "USD",
        "ResourceLocation": "West Europe",
        "ResourceId": f"/subscriptions/{sub}/resourceGroups/RG-A/providers/Microsoft.Compute/virtualMachines/{resource}",
        "ResourceGroup": "RG-A",
        "Tags": tags,
        "ChargeType": "Usage",
        "PricingModel": "OnDemand",
        "ReservationId": "",
    }
    row.update(extra)
    return row


def csv_payload(rows: list[dict], header: list[str] = EA_HEADER, bom: bool = True) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def query_payload(rows: list[list], columns: list[tuple[str, str]]) -> bytes:
    doc = {
        "id": "q",
        "name": "q",
        "type": "Microsoft.CostManagement/query",
        "properties": {"nextLink": None, "columns": [{"name": n, "type": t} for n, t in columns], "rows": rows},
    }
    return json.dumps(doc).encode()


def focus_payload(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def focus_row(
    day: str, resource: str, billed: str, effective: str, *, sub: str = "sub-f", tags: str | None = None
) -> dict:
    return {
        "BillingAccountId": "ba-f",
        "BillingAccountName": "Contoso",
        "SubAccountId": sub,
        "SubAccountName": f"name-{sub}",
        "ChargePeriodStart": f"{day}T00:00:00Z",
        "ChargePeriodEnd": f"{day}T23:59:59Z",
        "ResourceId": f"/subscriptions/{sub}/resourcegroups/rg-f/providers/microsoft.storage/storageaccounts/{resource}",
        "ResourceName": resource,
        "ResourceType": "Storage account",
        "RegionName": "westeurope",
        "ServiceName": "Storage",
        "ServiceCategory": "Storage",
        "ChargeCategory": "Usage",
        "ChargeClass": "NULL",
        "PricingCategory": "Standard",
        "PricingQuantity": "10",
        "PricingUnit": "1 GB/Month",
        "BilledCost": billed,
        "EffectiveCost": effective,
        "ListCost": billed,
        "BillingCurrency": "EUR",
        "Tags": tags if tags is not None else '{"Env": "prod", " Team ": "data"}',
        "x_ResourceGroupName": "rg-f",
        "x_SkuMeterId": "sku-1",
        "x_SkuMeterName": "LRS Data Stored",
    }


class Bronze:
    """Accumulates bronze rows (one per Kafka message) with increasing offsets."""

    def __init__(self, topic: str = "costs") -> None:
        self.topic = topic
        self.offset = 0
        self.rows: list[dict] = []

    def add(self, fmt: str, payload: bytes, *, batch: str, metric: str = "", sub: str = "", fetched: int = 0,
            content_type: str = "text/csv", source: str = "file") -> Bronze:  # fmt: skip
        meta = {"source": source, "metric": metric, "subscription_id": sub}
        self.rows.append(
            {
                "topic": self.topic,
                "partition": 0,
                "offset": self.offset,
                "kafka_key": sub,
                "kafka_timestamp": datetime(2024, 2, 1, tzinfo=UTC),
                "schema_version": 1,
                "source": source,
                "format": fmt,
                "content_type": content_type,
                "batch_id": batch,
                "fetched_at": datetime(2024, 2, 1, fetched, tzinfo=UTC),
                "meta": json.dumps({k: v for k, v in meta.items() if v}),
                "payload": payload,
                "ingested_at": datetime(2024, 2, 1, fetched, tzinfo=UTC),
                "run_id": f"ingest-{batch}",
                "ingest_date": date(2024, 2, 1),
            }
        )
        self.offset += 1
        return self

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=BRONZE_COST_RECORDS.schema)

    def flush(self, lake) -> None:
        """Append the accumulated rows to bronze (as ingest would) and start a new set."""
        lake.append("bronze/cost_records", self.table(), partition_by=["ingest_date"], run_id="ingest")
        self.rows = []


def run_medallion(settings, lake, spark, *, run_id: str, full_rebuild: bool = False):
    """Silver then gold on one lake, through the functions the pipeline's silver and gold steps call, without
    the steps' Postgres bookkeeping (stage progress, FX marks): new bronze -> silver, then gold for the
    months silver touched (every month on `full_rebuild`, which first empties silver). Returns the stats."""
    import time

    import pyarrow.compute as pc

    from backend.lake.catalog import GOLD_COST_DAILY
    from backend.medallion.refine import MedallionStats, reset_for_rebuild, run_gold, run_silver
    from backend.sources.fx import reporting_currency

    currency = reporting_currency(settings, lake)
    stats = MedallionStats(run_id=run_id, full_rebuild=full_rebuild)
    t0 = time.perf_counter()
    if full_rebuild:
        reset_for_rebuild(lake, run_id=run_id)
    months = run_silver(spark, lake, stats, run_id=run_id)
    stats.affected_months = sorted(months)
    t1 = time.perf_counter()
    if full_rebuild:
        stats.gold_rows = run_gold(spark, lake, None, run_id=run_id, reporting_currency=currency)
        if lake.exists(GOLD_COST_DAILY.name):
            months_col = lake.read_arrow(GOLD_COST_DAILY.name, columns=["charge_month"]).column("charge_month")
            stats.affected_months = sorted(pc.unique(months_col).to_pylist())
    elif months:
        stats.gold_rows = run_gold(
            spark, lake, sorted(months), run_id=run_id, days=stats.touched_days, reporting_currency=currency
        )
    stats.seconds["gold"] = round(time.perf_counter() - t1, 2)
    stats.seconds["total"] = round(time.perf_counter() - t0, 2)
    return stats
