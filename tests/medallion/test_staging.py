"""Staging in the engine: every payload layout (text or typed Parquet, any timestamp unit, CSV) decodes to the same validated rows; nothing is lost."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from backend.lake import lake_from_settings
from backend.lake.catalog import SILVER_COSTS, SILVER_QUARANTINE
from backend.lake.engine import SCRATCH_PREFIX
from backend.medallion import refine, staging
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


def _validated(spark, bronze: pa.Table):
    frame = staging.validated(spark.createDataFrame(bronze))
    rows = frame.select(*COMPARED).orderBy("offset", "row_index").collect()
    return [r.asDict(recursive=True) for r in rows]


def test_every_payload_layout_validates_to_the_same_typed_rows(spark):
    rows = _validated(spark, _bronze())
    assert len(rows) == 3 + 4 + 1 + 4 + 1 + 1
    typed = [r for r in rows if r["offset"] == 1]
    assert typed[0]["SubAccountId"] == "/subscriptions/0000aaaa-1111-2222-3333-444455556666"
    assert typed[0]["Tags"] == {"env": "prod", "team": "data"}
    assert typed[1]["BilledCost"] == Decimal("1E-7")  # a tiny decimal survives
    assert [r["ListCost"] for r in typed[:3]] == [Decimal("0.1"), Decimal("1234.5678"), Decimal("3.333333333333")]
    assert [r["ServiceName"] for r in typed] == ["Storage", None, None, None]  # "NULL", "", "null" are no service
    assert [r["ChargeCategory"] for r in typed] == ["Usage", None, "Null ", None]
    assert "missing_charge_date" in typed[3]["_rules"] and "unknown_currency" in typed[3]["_rules"]
    # Nanosecond timestamps give what microseconds give.
    nanos = [r for r in rows if r["offset"] == 3]
    assert [(r["x_ChargeDate"], r["BilledCost"], r["Tags"]) for r in nanos] == [
        (r["x_ChargeDate"], r["BilledCost"], r["Tags"]) for r in typed
    ]
    assert rows[-1]["_rules"] == ["unparseable_payload"]


def test_a_payload_whose_pages_are_broken_is_quarantined_and_its_batch_kept(spark, tmp_path):
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
    stats = refine.MedallionStats(run_id="r1")
    refine.run_silver(spark, lake, stats, run_id="r1")
    assert stats.valid_rows == 1 and stats.quarantined == 1
    assert lake.count(SILVER_COSTS.name) == 1
    rule = lake.read_arrow(SILVER_QUARANTINE.name, columns=["rule"]).column(0).to_pylist()
    assert rule == ["unparseable_payload"]


def test_scratch_is_removed_after_the_run_and_a_killed_runs_scratch_by_a_later_one(spark, tmp_path):
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    base = Path(lake.location.join(SCRATCH_PREFIX))
    (base / "killed-run-1234" / "validated").mkdir(parents=True)
    bronze = Bronze()
    bronze.add("focus", focus_payload([focus_row("2024-01-05", "st1", "1", "1")]), batch="b1")
    bronze.flush(lake)
    refine.run_silver(spark, lake, refine.MedallionStats(run_id="r1"), run_id="r1")
    assert not base.exists() or not list(base.iterdir())  # the dead run's and this run's scratch are gone
    assert lake.read_arrow(SILVER_COSTS.name).filter(pc.is_valid(pc.field("ResourceId"))).num_rows == 1
