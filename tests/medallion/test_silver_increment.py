"""Silver increments: a day silver never held is appended (no MERGE), a re-stated day is merged, both as a rebuild gives."""

from __future__ import annotations

from decimal import Decimal

from backend.lake import lake_from_settings
from backend.lake.catalog import SILVER_COSTS
from backend.medallion import refine
from tests.conftest import make_settings
from tests.medallion.helpers import Bronze, csv_payload, ea_row, run_medallion


def _silver(lake) -> dict:
    rows = lake.read_arrow(SILVER_COSTS.name).to_pylist()
    return {
        (str(r["x_ChargeDate"]), r["ResourceId"].rsplit("/", 1)[-1]): (r["BilledCost"], r["EffectiveCost"])
        for r in rows
    }


def _run(spark, lake, run_id: str) -> refine.MedallionStats:
    stats = refine.MedallionStats(run_id=run_id)
    refine.run_silver(spark, lake, stats, run_id=run_id)
    return stats


def test_a_new_day_is_appended_a_restated_day_merged_and_both_match_a_rebuild(spark, tmp_path, caplog):
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    bronze = Bronze()
    bronze.add("azure_export_ea", csv_payload([ea_row("01/30/2024", "vm1", "10")]), batch="a1", metric="ActualCost")
    bronze.add("azure_export_ea", csv_payload([ea_row("12/30/2023", "vm1", "4")]), batch="a0", metric="ActualCost")
    bronze.flush(lake)
    _run(spark, lake, "r1")

    # A new day in both reports: the actual report's rows are appended, the amortized report is then
    # merged onto them (its slice now exists), so each row carries both costs.
    bronze.add("azure_export_ea", csv_payload([ea_row("01/31/2024", "vm1", "7"), ea_row("01/31/2024", "vm2", "1")]),
               batch="a2", metric="ActualCost", fetched=2)  # fmt: skip
    bronze.add("azure_export_ea", csv_payload([ea_row("01/31/2024", "vm1", "6")]), batch="a2a",
               metric="AmortizedCost", fetched=2)  # fmt: skip
    bronze.flush(lake)
    with caplog.at_level("INFO", logger="backend.medallion.silver"):
        stats = _run(spark, lake, "r2")
    assert "silver append (billed): 2 rows, 1 new slices" in caplog.text
    assert "silver merge (effective)" in caplog.text
    assert stats.silver_upserted == 3
    assert _silver(lake) == {
        ("2023-12-30", "vm1"): (Decimal(4), None),
        ("2024-01-30", "vm1"): (Decimal(10), None),
        ("2024-01-31", "vm1"): (Decimal(7), Decimal(6)),
        ("2024-01-31", "vm2"): (Decimal(1), None),
    }
    # The bronze version is recorded as processed by the last commit, so nothing is processed twice.
    assert lake.transaction_version(SILVER_COSTS.name, refine.BRONZE_PROGRESS_APP_ID) == lake.version(
        "bronze/cost_records"
    )
    assert _run(spark, lake, "r3").bronze_files == 0

    # The same day re-pulled: vm2 is gone, vm1 re-rated -> a MERGE that clears what vanished.
    caplog.clear()
    bronze.add("azure_export_ea", csv_payload([ea_row("01/31/2024", "vm1", "8")]), batch="a3", metric="ActualCost",
               fetched=3)  # fmt: skip
    bronze.flush(lake)
    december_before_r4 = lake.file_uris(SILVER_COSTS.name, partition_filters=[("x_ChargeMonth", "=", "2023-12")])
    with caplog.at_level("INFO", logger="backend.medallion.silver"):
        _run(spark, lake, "r4")
    december_after_r4 = lake.file_uris(SILVER_COSTS.name, partition_filters=[("x_ChargeMonth", "=", "2023-12")])
    assert "silver merge (billed)" in caplog.text and "silver append" not in caplog.text
    assert _silver(lake) == {
        ("2023-12-30", "vm1"): (Decimal(4), None),
        ("2024-01-30", "vm1"): (Decimal(10), None),
        ("2024-01-31", "vm1"): (Decimal(8), Decimal(6)),
    }
    # The restatement rewrote only January's files: December's are the files they were (the MERGE, the
    # DELETE and the UPDATE carry the month predicate, so no other month is scanned or rewritten).
    assert december_after_r4 == december_before_r4
    assert {h["operation"] for h in lake.history(SILVER_COSTS.name, limit=4)} <= {"MERGE", "DELETE", "UPDATE", "WRITE"}

    # Re-pulled again without vm1, whose amortized cost is still known: its actual cost is cleared and
    # the row kept for the amortized cost; the new vm3 row is inserted.
    bronze.add("azure_export_ea", csv_payload([ea_row("01/31/2024", "vm3", "2")]), batch="a4", metric="ActualCost",
               fetched=4)  # fmt: skip
    bronze.flush(lake)
    stats = _run(spark, lake, "r5")
    assert stats.silver_upserted == 1
    incremental = _silver(lake)
    assert incremental == {
        ("2023-12-30", "vm1"): (Decimal(4), None),
        ("2024-01-30", "vm1"): (Decimal(10), None),
        ("2024-01-31", "vm1"): (None, Decimal(6)),
        ("2024-01-31", "vm3"): (Decimal(2), None),
    }
    assert lake.transaction_version(SILVER_COSTS.name, refine.BRONZE_PROGRESS_APP_ID) == lake.version(
        "bronze/cost_records"
    )

    run_medallion(settings, lake, spark, run_id="rebuild", full_rebuild=True)
    assert _silver(lake) == incremental
