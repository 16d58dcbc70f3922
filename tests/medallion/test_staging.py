"""Staging through Spark's own Parquet reader gives exactly what the Python decoder gives, and falls back to it."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F  # noqa: N812

from backend.lake import lake_from_settings
from backend.medallion import jobs, staging
from backend.medallion.schemas import SILVER_COSTS, SILVER_QUARANTINE
from tests.conftest import make_settings
from tests.medallion.helpers import Bronze, csv_payload, ea_row, focus_payload, focus_row

COMPARED = [
    "offset",
    "row_index",
    "SubAccountId",
    "x_ChargeDate",
    "ResourceId",
    "ServiceName",
    "ChargeCategory",
    "x_PricingModel",
    "BillingCurrency",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "PricingQuantity",
    "Tags",
    "x_MeterId",
    "_rules",
    "metric",
    "batch_id",
]


def _parquet(table: pa.Table, **kwargs) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kwargs)
    return sink.getvalue()


def _typed_focus(ts_unit: str = "us") -> bytes:
    """FOCUS as a real exporter writes it: timestamps, decimals, a map of tags, blanks and the literal NULL."""
    ts = pa.timestamp(ts_unit, tz="UTC")
    money = pa.decimal128(20, 10)
    day = datetime(2024, 1, 5, tzinfo=UTC)
    return _parquet(
        pa.table(
            {
                "ChargePeriodStart": pa.array([day, day, day, None], ts),
                "SubAccountId": ["0000AAAA-1111-2222-3333-444455556666", " ", "sub-x", "sub-x"],
                "BillingAccountId": ["ba", "ba", "ba", "ba"],
                "ResourceId": ["/A/b", "/a/C", None, "/a/d"],
                "ServiceName": ["Storage", "NULL", "", "null"],
                "ChargeCategory": ["Usage", " \t ", "Null ", "nUlL"],  # blank, not "NULL", "NULL"
                "BilledCost": pa.array([Decimal("1.5"), Decimal("0.0000001"), None, Decimal("2")], money),
                "EffectiveCost": pa.array([Decimal("1.25"), Decimal("3"), Decimal("4"), Decimal("2")], money),
                "PricingQuantity": pa.array([1.5, None, 0.1, 1e20], pa.float64()),
                # Doubles whose binary value is not their text: the typed cast must give the text's decimal.
                "ListCost": pa.array([0.1, 1234.5678, 10 / 3, None], pa.float64()),
                "BillingCurrency": ["eur", "EUR", "EUR", "US"],
                "Tags": pa.array(
                    [[("Env", "prod"), (" Team ", "data")], None, [], [("k", "v")]],
                    pa.map_(pa.string(), pa.string()),
                ),
                "x_SkuMeterId": ["m1", "m2", "m3", "m4"],
            }
        )
    )


def _bronze() -> pa.Table:
    rows = [focus_row("2024-01-05", f"st{i}", str(i), f"{i}.5", tags=None if i else "") for i in range(3)]
    bronze = Bronze()
    bronze.add("focus", focus_payload(rows), batch="b1")  # string layout (the synthetic estate's)
    bronze.add("focus", _typed_focus(), batch="b1")  # typed layout
    bronze.add("focus", focus_payload(rows[:1]), batch="b2")  # the string layout again
    bronze.add("focus", _typed_focus("ns"), batch="b3")  # nanoseconds: Spark cannot read it -> Python
    bronze.add("azure_export_ea", csv_payload([ea_row("01/05/2024", "vm1", "1.25")]), batch="b4", metric="ActualCost")
    bronze.add("focus", b"PAR1 this is not parquet", batch="b5")  # unreadable footer -> Python failure row
    return bronze.table()


def _validated(spark, bronze: pa.Table, payload_dir):
    frame = staging.validated(spark, bronze, payload_dir)
    rows = frame.select(*COMPARED).orderBy("offset", "row_index").collect()
    return [r.asDict(recursive=True) for r in rows]


def test_spark_read_payloads_validate_exactly_like_the_python_decoder(spark, tmp_path, caplog):
    bronze = _bronze()
    with caplog.at_level("INFO", logger="backend.medallion.staging"):
        native = _validated(spark, bronze, tmp_path / "payloads")
    assert "3 payloads read by Spark in 2 layouts, 3 through the Python decoder" in caplog.text
    python = _validated(spark, bronze, None)
    assert native == python
    assert len(native) == 3 + 4 + 1 + 4 + 1 + 1
    typed = [r for r in native if r["offset"] == 1]
    assert typed[0]["SubAccountId"] == "/subscriptions/0000aaaa-1111-2222-3333-444455556666"
    assert typed[0]["Tags"] == {"env": "prod", "team": "data"}
    assert typed[1]["BilledCost"] == Decimal("1E-7")  # a tiny decimal survives
    assert [r["ListCost"] for r in typed[:3]] == [Decimal("0.1"), Decimal("1234.5678"), Decimal("3.333333333333")]
    assert [r["ServiceName"] for r in typed] == ["Storage", None, None, None]  # "NULL", "", "null" are no service
    assert [r["ChargeCategory"] for r in typed] == ["Usage", None, "Null ", None]
    assert "missing_charge_date" in typed[3]["_rules"] and "unknown_currency" in typed[3]["_rules"]
    assert native[-1]["_rules"] == ["unparseable_payload"]


def test_a_payload_spark_cannot_read_falls_back_to_python_and_loses_nothing(spark, tmp_path, caplog):
    good = focus_payload([focus_row("2024-01-05", "st1", "1", "1")])
    values = [f"2024-01-{i % 28 + 1:02d}T{i:09d}" for i in range(50_000)]  # incompressible: pages >> footer
    broken = bytearray(_parquet(pa.table({"ChargePeriodStart": values}), compression="zstd", use_dictionary=False))
    broken[200:4000] = b"\x00" * 3800  # footer intact, data pages garbage
    pq.ParquetFile(io.BytesIO(bytes(broken)))  # the footer still reads
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's exact error type depends on where it breaks
        pq.read_table(io.BytesIO(bytes(broken)))
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    bronze = Bronze()
    bronze.add("focus", good, batch="b1")
    bronze.add("focus", bytes(broken), batch="b1")
    bronze.flush(lake)
    stats = jobs.MedallionStats(run_id="r1")
    with caplog.at_level("WARNING", logger="backend.medallion.jobs"):
        jobs.run_silver(spark, lake, stats, run_id="r1")
    assert "decoding this run in Python" in caplog.text
    assert stats.valid_rows == 1 and stats.quarantined == 1
    assert lake.count(SILVER_COSTS) == 1
    rule = lake.read_arrow(SILVER_QUARANTINE, columns=["rule"]).column(0).to_pylist()
    assert rule == ["unparseable_payload"]


def test_scratch_is_removed_after_the_run_and_a_killed_runs_scratch_by_a_later_one(spark, tmp_path):
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    base = jobs.Scratch(spark, "probe").root.parent
    base.mkdir(parents=True, exist_ok=True)
    dead, recent = base / "killed-run-1234", base / "running-elsewhere-5678"
    for path in (dead, recent):
        (path / "validated").mkdir(parents=True)
    old = time.time() - jobs.STALE_SCRATCH_S - 60
    os.utime(dead, (old, old))
    bronze = Bronze()
    bronze.add("focus", focus_payload([focus_row("2024-01-05", "st1", "1", "1")]), batch="b1")
    bronze.flush(lake)
    jobs.run_silver(spark, lake, jobs.MedallionStats(run_id="r1"), run_id="r1")
    left = {p.name for p in base.iterdir()}
    assert not any(name.startswith("r1-") for name in left)  # this run's own scratch is gone
    assert "killed-run-1234" not in left and "running-elsewhere-5678" in left
    assert spark.read.parquet(*lake.file_uris(SILVER_COSTS)).where(F.col("ResourceId").isNotNull()).count() == 1
