"""Gold cost_daily carries contracted cost and commitment used/unused cost, null where the source lacks them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pyarrow as pa
import pytest

from backend.lake.catalog import SILVER_COSTS
from backend.medallion import gold

pytestmark = pytest.mark.transform

_MONEY = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity")


def _silver(spark, rows: list[dict]):
    base = {"x_SourceFamily": "focus", "SubAccountId": "s", "BillingCurrency": "USD", "Tags": []}
    full = []
    for row in rows:
        r = {name: None for name in SILVER_COSTS.schema.names} | base | row
        r["x_ChargeMonth"] = r["x_ChargeDate"].strftime("%Y-%m")
        for money in _MONEY:
            if r[money] is not None:
                r[money] = Decimal(str(r[money]))
        full.append(r)
    return spark.createDataFrame(pa.Table.from_pylist(full, schema=SILVER_COSTS.schema))


def test_contracted_and_commitment_costs_reach_gold(spark):
    day = date(2026, 3, 1)
    df = _silver(
        spark,
        [
            # A VM hour covered by a reservation: list 10, negotiated 9, effective (amortized) 6.
            {"x_ChargeDate": day, "ResourceId": "vm1", "ListCost": 10, "ContractedCost": 9, "EffectiveCost": 6,
             "BilledCost": 0, "CommitmentDiscountStatus": "Used", "x_PricingModel": "Reservation"},
            # The reservation's idle hours: effective 2 unused.
            {"x_ChargeDate": day, "ResourceId": "ri1", "ListCost": 0, "ContractedCost": 0, "EffectiveCost": 2,
             "BilledCost": 0, "CommitmentDiscountStatus": "unused", "x_PricingModel": "Reservation"},
            # An on-demand row of the same FOCUS day: covered by no commitment, so 0 used and 0 unused.
            {"x_ChargeDate": day, "ResourceId": "db1", "ListCost": 5, "ContractedCost": 4, "EffectiveCost": 4,
             "BilledCost": 4},
        ],
    )  # fmt: skip
    rows = {r["resource_id"]: r for r in gold.cost_daily(df, run_id="r").collect()}
    assert rows["vm1"]["contracted_cost"] == Decimal(9) and rows["vm1"]["list_cost"] == Decimal(10)
    assert (rows["vm1"]["commitment_used_cost"], rows["vm1"]["commitment_unused_cost"]) == (Decimal(6), Decimal(0))
    assert (rows["ri1"]["commitment_used_cost"], rows["ri1"]["commitment_unused_cost"]) == (Decimal(0), Decimal(2))
    assert (rows["db1"]["commitment_used_cost"], rows["db1"]["commitment_unused_cost"]) == (Decimal(0), Decimal(0))
    assert rows["db1"]["contracted_cost"] == Decimal(4)


def test_a_source_without_the_columns_stays_not_available(spark):
    day = date(2026, 3, 1)
    df = _silver(
        spark,
        [
            # An Azure actual-cost export: no ContractedCost, no CommitmentDiscountStatus, no amortized cost.
            {"x_ChargeDate": day, "x_SourceFamily": "azure_detail", "ResourceId": "vm1", "BilledCost": 7,
             "ListCost": 8},
            {"x_ChargeDate": day, "x_SourceFamily": "azure_detail", "ResourceId": "vm2", "BilledCost": 3},
            # A FOCUS row of another subscription the same day carries status: it does not make Azure's 0.
            {"x_ChargeDate": day, "SubAccountId": "t", "ResourceId": "vm3", "ListCost": 1, "ContractedCost": 1,
             "EffectiveCost": 1, "BilledCost": 1, "CommitmentDiscountStatus": "Used"},
        ],
    )  # fmt: skip
    rows = {r["resource_id"]: r for r in gold.cost_daily(df, run_id="r").collect()}
    for rid in ("vm1", "vm2"):
        assert rows[rid]["contracted_cost"] is None
        assert rows[rid]["commitment_used_cost"] is None and rows[rid]["commitment_unused_cost"] is None
    assert rows["vm3"]["commitment_used_cost"] == Decimal(1)


def test_repeated_keys_sum_their_commitment_costs(spark):
    day = date(2026, 3, 2)
    same = {"x_ChargeDate": day, "ResourceId": "vm1", "x_MeterName": "D2s v5", "x_PricingModel": "SavingsPlan"}
    df = _silver(
        spark,
        [
            same | {"x_MeterId": "a", "ListCost": 4, "ContractedCost": 4, "EffectiveCost": 3, "BilledCost": 0,
                    "CommitmentDiscountStatus": "Used"},
            same | {"x_MeterId": "b", "ListCost": 6, "ContractedCost": 5, "EffectiveCost": 5, "BilledCost": 0,
                    "CommitmentDiscountStatus": "Used"},
            same | {"x_MeterId": "c", "ListCost": 0, "ContractedCost": 0, "EffectiveCost": 1, "BilledCost": 0,
                    "CommitmentDiscountStatus": "Unused"},
        ],
    )  # fmt: skip
    (row,) = gold.cost_daily(df, run_id="r").collect()
    assert (row["list_cost"], row["contracted_cost"], row["amortized_cost"]) == (Decimal(10), Decimal(9), Decimal(9))
    assert (row["commitment_used_cost"], row["commitment_unused_cost"]) == (Decimal(8), Decimal(1))
    assert row["row_count"] == 3
