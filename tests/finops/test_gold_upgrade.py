"""A lake whose gold cost_daily predates the savings columns upgrades cleanly: FOCUS commitments reach gold and mart."""

from __future__ import annotations

from decimal import Decimal

import pyarrow.compute as pc
import pytest

from backend.lake import lake_from_settings
from backend.lake.catalog import GOLD_COST_DAILY
from backend.mart import waste
from backend.mart.load import load_gold
from tests.conftest import make_settings
from tests.medallion.helpers import Bronze, focus_payload, focus_row, run_medallion

NEW = ("contracted_cost", "commitment_used_cost", "commitment_unused_cost")
PARQUET = "application/vnd.apache.parquet"


def _committed(day: str, resource: str, effective: str, status: str, *, contracted: str) -> dict:
    """A FOCUS 1.0 row of a VM covered by (Used) or idle in (Unused) a reservation."""
    return focus_row(day, resource, "0", effective) | {
        "ListCost": "10" if status == "Used" else "0",
        "ContractedCost": contracted,
        "CommitmentDiscountId": "/providers/microsoft.capacity/reservationorders/ro1",
        "CommitmentDiscountType": "Reservation",
        "CommitmentDiscountStatus": status,
        "PricingCategory": "Committed",
    }


@pytest.mark.slow
def test_an_old_gold_table_gains_the_columns_and_an_increment_fills_them(spark, tmp_path, mart_url):
    settings = make_settings(tmp_path, database_url=mart_url)
    lake = lake_from_settings(settings)
    bronze = Bronze()
    first = [focus_row("2024-01-30", "st1", "5", "5") | {"ContractedCost": "4"}]
    bronze.add("focus", focus_payload(first), batch="f-1", content_type=PARQUET)
    bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="run-1")
    # What a lake written before this change holds: gold cost_daily without the savings columns.
    old = lake.read_arrow(GOLD_COST_DAILY.name).drop_columns(list(NEW))
    lake.overwrite(GOLD_COST_DAILY.name, old, run_id="old", partition_by=["charge_month"])
    assert not set(NEW) & set(lake.table(GOLD_COST_DAILY.name).schema().to_arrow().names)

    second = [
        _committed("2024-02-01", "vm1", "6", "Used", contracted="9"),
        _committed("2024-02-01", "ro1", "2", "Unused", contracted="0"),
        focus_row("2024-02-01", "st1", "5", "5") | {"ContractedCost": "4"},
    ]
    bronze.add("focus", focus_payload(second), batch="f-2", content_type=PARQUET)
    bronze.flush(lake)
    stats = run_medallion(settings, lake, spark, run_id="run-2")
    assert stats.affected_months == ["2024-02"]
    gold = lake.read_arrow(GOLD_COST_DAILY.name)
    assert set(NEW) <= set(gold.column_names)
    feb = gold.filter(pc.equal(gold["charge_month"], "2024-02"))
    assert pc.sum(feb["commitment_used_cost"]).as_py() == Decimal(6)
    assert pc.sum(feb["commitment_unused_cost"]).as_py() == Decimal(2)
    assert pc.sum(feb["contracted_cost"]).as_py() == Decimal(13)
    jan = gold.filter(pc.equal(gold["charge_month"], "2024-01"))
    assert jan["contracted_cost"].null_count == jan.num_rows  # an untouched month: until it is recomputed

    load_gold(settings, lake, run_id="run-2")
    from backend.mart.db import reader_engine

    reader = reader_engine(settings)
    try:
        import datetime as dt

        s = waste.savings_summary(reader, start=dt.date(2024, 2, 1), end=dt.date(2024, 2, 29), currency="EUR")
        assert (s.commitment_used, s.commitment_unused) == (Decimal(6), Decimal(2))
        assert s.commitment_utilisation == pytest.approx(0.75)
        assert s.negotiated_savings == Decimal(10 + 5 - 13) and s.commitment_savings == Decimal(13 - 13)
        old_month = waste.savings_summary(reader, start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 31), currency="EUR")
        assert old_month.negotiated_savings is None and old_month.effective_savings_rate == pytest.approx(0.0)
    finally:
        reader.dispose()
