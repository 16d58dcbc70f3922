"""Lake maintenance: bronze's small files are compacted without silver reprocessing them, and only once silver has them."""

from __future__ import annotations

from types import SimpleNamespace

from backend.lake import lake_from_settings
from backend.lake.catalog import BRONZE_COST_RECORDS, SILVER_COSTS
from backend.pipeline.steps import maintenance
from tests.conftest import make_settings
from tests.medallion.helpers import Bronze, focus_payload, focus_row, run_medallion


def _silver(lake) -> list[tuple]:
    rows = lake.read_arrow(SILVER_COSTS.name, columns=["x_ChargeDate", "ResourceId", "BilledCost"]).to_pylist()
    return sorted((str(r["x_ChargeDate"]), r["ResourceId"], r["BilledCost"]) for r in rows)


def test_bronze_is_compacted_once_silver_has_it_and_never_reprocessed(spark, tmp_path):
    settings = make_settings(tmp_path, lake_vacuum_retention_hours=0)
    lake = lake_from_settings(settings)
    ctx = SimpleNamespace(lake=lake, settings=settings, run_id="maint-1")
    bronze = Bronze()
    for day in ("2024-01-05", "2024-01-06", "2024-01-07"):  # three drains: three small files
        bronze.add("focus", focus_payload([focus_row(day, "st1", "1", "1")]), batch=f"b-{day}")
        bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="r1")
    before = _silver(lake)
    assert len(lake.file_uris(BRONZE_COST_RECORDS.name)) == 3

    # New bronze that silver has not processed yet: compacting now would hide it, so nothing is compacted.
    bronze.add("focus", focus_payload([focus_row("2024-01-08", "st1", "2", "2")]), batch="b-8")
    bronze.flush(lake)
    waiting = maintenance(ctx)
    assert "bronze_not_compacted" in waiting.detail
    assert len(lake.file_uris(BRONZE_COST_RECORDS.name)) == 4

    run_medallion(settings, lake, spark, run_id="r2")
    done = maintenance(ctx)
    assert done.detail["compacted"][BRONZE_COST_RECORDS.name]["files_removed"] == 4
    assert len(lake.file_uris(BRONZE_COST_RECORDS.name)) == 1
    assert done.detail["vacuumed_files"].get(BRONZE_COST_RECORDS.name, 0) >= 4  # retention 0: the old files are gone
    # The compaction's version counts as processed: the rerun finds no new bronze and silver is unchanged.
    again = run_medallion(settings, lake, spark, run_id="r3")
    assert again.bronze_files == 0
    assert _silver(lake) == sorted([*before, ("2024-01-08", before[0][1], before[0][2] * 2)])
    # A later drain is processed alone.
    bronze.add("focus", focus_payload([focus_row("2024-01-09", "st1", "3", "3")]), batch="b-9")
    bronze.flush(lake)
    later = run_medallion(settings, lake, spark, run_id="r4")
    assert later.bronze_files == 1 and later.source_rows == 1
