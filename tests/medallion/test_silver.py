"""Silver transforms on three-row inline DataFrames: typing, validation rules, tags, key summing, newest batch wins."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from backend.demo.estate import Subscription
from backend.medallion import silver
from backend.medallion.parse import TEXT_SCHEMA, derive

# Pure transforms: CI runs these on Sail and, with `--engine jvm`, on Apache Spark (`make test`).
pytestmark = pytest.mark.transform


GUID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
ARM = f"/subscriptions/{GUID}"


def staged(spark, rows: list[dict]):
    """Staging rows with defaults for every text field not given, derived as the decoder derives them."""
    base = {
        "source_format": "azure_export_ea",
        "source": "file",
        "metric": "ActualCost",
        "sub_account_id": "sub-1",
        "charge_date": "2024-01-05",
        "cost": "1",
        "billing_currency": "USD",
        "resource_id": "/subscriptions/sub-1/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM1",
        "meter_id": "m",
        "topic": "t",
        "partition": 0,
        "offset": 0,
        "batch_id": "b1",
        "fetched_at": datetime(2024, 1, 6, tzinfo=UTC),
    }
    full = []
    for i, row in enumerate(rows):
        r = {name: None for name in TEXT_SCHEMA.names} | base | {"row_index": i} | row
        full.append(r)
    return spark.createDataFrame(derive(pa.Table.from_pylist(full, schema=TEXT_SCHEMA)))


def rules_of(spark, rows):
    return [r["_rules"] for r in silver.validate(staged(spark, rows)).orderBy("row_index").collect()]


def test_dates_in_every_azure_form_and_exact_money(spark):
    out = silver.validate(
        staged(
            spark,
            [
                {"charge_date": "01/05/2024", "cost": "0.000000000001"},
                {"charge_date": "20240105", "source_format": "azure_query"},
                {"charge_date": "2024-01-05T00:00:00Z", "cost": "1e2"},
            ],
        )
    ).orderBy("row_index")
    rows = out.collect()
    assert {str(r["x_ChargeDate"]) for r in rows} == {"2024-01-05"}
    assert rows[0]["BilledCost"] == Decimal("0.000000000001")
    assert rows[2]["BilledCost"] == Decimal(100)
    assert [r["_rules"] for r in rows] == [[], [], []]
    assert rows[0]["ResourceType"] == "microsoft.compute/virtualmachines"
    assert rows[0]["ResourceName"] == "vm1"


def test_validation_rules_name_what_failed(spark):
    assert rules_of(
        spark,
        [
            {"charge_date": "31/31/2024", "cost": "NaN", "billing_currency": "US"},
            {"charge_date": None, "sub_account_id": None, "cost": None},
            {"metric": "Usage", "pricing_quantity": "lots", "tags_raw": "{broken"},
        ],
    ) == [
        ["invalid_charge_date", "invalid_cost", "unknown_currency"],
        ["missing_charge_date", "missing_scope", "missing_cost"],
        ["unknown_metric", "invalid_quantity", "invalid_tags"],
    ]


def test_tags_json_and_legacy_ea_are_normalised(spark):
    rows = (
        silver.validate(
            staged(
                spark,
                [
                    {"tags_raw": '{" Env ": " prod ", "CostCenter": 42}'},
                    {"tags_raw": '"env": "dev","ENV": "test"'},
                    {"tags_raw": None},
                    {"tags_raw": '{" ": "x", "": "y", "A": null, "a ": " z "}'},
                ],
            )
        )
        .orderBy("row_index")
        .collect()
    )
    assert dict(rows[3]["Tags"]) == {"a": "z"}  # blank keys dropped; "A" and "a " fold to one key, the last wins
    assert dict(rows[0]["Tags"]) == {"env": "prod", "costcenter": "42"}
    assert dict(rows[1]["Tags"]) == {"env": "test"}  # case-folded duplicates: the last one wins
    assert dict(rows[2]["Tags"]) == {}


def test_focus_row_sets_both_costs_and_azure_rows_one(spark):
    rows = (
        silver.validate(
            staged(
                spark,
                [
                    {
                        "source_format": "focus",
                        "metric": "FocusCost",
                        "billed_cost": "2",
                        "effective_cost": "1.5",
                        "commitment_discount_type": "Savings Plan",
                    },  # fmt: skip
                    {"metric": "AmortizedCost", "cost": "3"},
                    {"cost": "4", "pricing_model": "Spot"},
                ],
            )
        )
        .orderBy("row_index")
        .collect()
    )
    assert [(r["_mode"], r["BilledCost"], r["EffectiveCost"]) for r in rows] == [
        ("both", Decimal(2), Decimal("1.5")),
        ("effective", None, Decimal(3)),
        ("billed", Decimal(4), None),
    ]
    assert [r["x_PricingModel"] for r in rows] == ["SavingsPlan", None, "Spot"]


def test_transform_sums_identical_keys_and_keeps_the_newest_batch(spark):
    valid = silver.validate(
        staged(
            spark,
            [
                {"cost": "1", "batch_id": "old", "fetched_at": datetime(2024, 1, 6, tzinfo=UTC)},
                {"cost": "2", "batch_id": "new", "fetched_at": datetime(2024, 1, 7, tzinfo=UTC), "offset": 9},
                {"cost": "3", "batch_id": "new", "fetched_at": datetime(2024, 1, 7, tzinfo=UTC), "offset": 9},
            ],
        )
    )
    out = silver.transform(valid, run_id="r").collect()
    assert len(out) == 1
    row = out[0]
    assert row["BilledCost"] == Decimal(5) and row["x_SourceRowCount"] == 2
    assert (row["x_BilledBatchId"], row["x_EffectiveBatchId"], row["x_BronzeOffset"]) == ("new", None, 9)
    assert row["x_Slice"] == "azure_detail|sub-1|2024-01-05" and row["x_ChargeMonth"] == "2024-01"
    assert row["x_RunId"] == "r"


def test_single_and_repeated_keys_come_out_alike(spark):
    """Keys with one source row pass through, keys with several are aggregated: same columns, same rules."""
    new = {"batch_id": "b1", "fetched_at": datetime(2024, 1, 7, tzinfo=UTC)}
    vm2 = "/subscriptions/sub-1/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM2"
    valid = silver.validate(
        staged(
            spark,
            [
                {**new, "cost": "1.5", "offset": 4, "meter_name": "first"},
                {**new, "cost": "2.25", "offset": 3, "meter_name": "earlier"},
                {**new, "cost": "7", "offset": 5, "resource_id": vm2, "meter_name": "only"},
                {**new, "cost": None, "offset": 6, "resource_id": vm2, "meter_id": "m2"},
            ],
        )
    )
    out = {(r["ResourceId"][-3:], r["x_MeterId"]): r for r in silver.transform(valid, run_id="r").collect()}
    assert set(out) == {("vm1", "m"), ("vm2", "m"), ("vm2", "m2")}
    summed, single, empty = out["vm1", "m"], out["vm2", "m"], out["vm2", "m2"]
    assert (summed["BilledCost"], summed["x_SourceRowCount"], summed["x_BronzeOffset"]) == (Decimal("3.75"), 2, 3)
    assert summed["x_MeterName"] == "earlier"  # dimensions of the first row by Kafka position
    assert (single["BilledCost"], single["x_SourceRowCount"], single["x_BronzeOffset"]) == (Decimal(7), 1, 5)
    assert single["x_MeterName"] == "only" and single["x_Slice"] == summed["x_Slice"]
    assert (empty["BilledCost"], empty["x_SourceRowCount"]) == (None, 1)
    assert [f.name for f in silver.transform(valid, run_id="r").schema.fields][-2:] == ["_mode", "_additive"]


def test_quarantine_keeps_the_raw_row_and_every_rule(spark):
    bad = silver.validate(staged(spark, [{"cost": "abc", "billing_currency": "XX"}]))
    row = silver.quarantine(bad, run_id="r").collect()[0]
    assert row["rule"] == "invalid_cost" and row["rules"] == ["invalid_cost", "unknown_currency"]
    assert '"cost":"abc"' in row["raw_row"]
    assert (row["topic"], row["offset"], row["row_index"]) == ("t", 0, 0)


@pytest.mark.parametrize(
    ("text", "expected"), [("usage", "Usage"), ("UnusedReservation", "Usage"), ("Refund", "Credit")]
)
def test_charge_type_maps_to_focus_charge_category(spark, text, expected):
    row = silver.validate(staged(spark, [{"charge_category": text}])).collect()[0]
    assert row["ChargeCategory"] == expected


def test_commitment_status_is_derived_for_azure_rows_and_kept_for_focus(spark):
    rows = (
        silver.validate(
            staged(
                spark,
                [
                    {"metric": "AmortizedCost", "charge_category": "UnusedReservation", "commitment_discount_id": "R1"},
                    {"metric": "AmortizedCost", "charge_category": "UnusedSavingsPlan", "commitment_discount_id": "S1"},
                    {"metric": "AmortizedCost", "charge_category": "Usage", "commitment_discount_id": "R1"},
                    {"charge_category": "Purchase", "commitment_discount_id": "R1"},  # the purchase: neither
                    {"charge_category": "Usage", "commitment_discount_id": " "},  # on-demand usage
                    {"source_format": "focus", "metric": "FocusCost", "billed_cost": "0", "effective_cost": "1",
                     "charge_category": "Usage", "commitment_discount_status": "Unused",
                     "commitment_discount_id": "R1"},
                ],
            )
        )
        .orderBy("row_index")
        .collect()
    )  # fmt: skip
    assert [r["CommitmentDiscountStatus"] for r in rows] == ["Unused", "Unused", "Used", None, None, "Unused"]


def test_sub_account_id_takes_one_form_per_subscription(spark):
    synthetic = Subscription(str(uuid.uuid4()), "Production", "prod").sub_account_id
    cases = [
        (GUID, ARM),  # Azure reports / Query API: bare guid
        (GUID.upper(), ARM),  # exports sometimes upper-case it
        (f"{{{GUID.upper()}}}", ARM),
        (f"  {{ {GUID} }}\t", ARM),
        (ARM, ARM),  # FOCUS: already the ARM id
        (f"/SUBSCRIPTIONS/{GUID.upper()}", ARM),
        (f"{ARM}/", ARM),
        (f"/subscriptions/{GUID.upper()}/resourceGroups/RG-A", ARM),
        (synthetic, synthetic),  # the demo estate (and its anomaly labels) already use the silver form
        # Not an Azure subscription: kept as sent (trimmed), no subscription invented.
        (" 123456789012 ", "123456789012"),
        ("ABCD-EFGH-BG7-PGB", "ABCD-EFGH-BG7-PGB"),
        ("/subscriptions/sub-1", "/subscriptions/sub-1"),
        (f"{GUID}/resourceGroups/x", f"{GUID}/resourceGroups/x"),
        (f"{GUID}0", f"{GUID}0"),
        ("   ", None),
        (None, None),
    ]
    valid = silver.validate(staged(spark, [{"sub_account_id": raw} for raw, _ in cases]))
    assert [r["SubAccountId"] for r in valid.orderBy("row_index").collect()] == [expected for _, expected in cases]


def test_sub_account_id_falls_back_to_the_bronze_meta_and_keys_on_the_canonical_form(spark):
    rows = [
        {"sub_account_id": GUID.upper(), "cost": "1"},
        {"sub_account_id": None, "meta_subscription_id": f"{{{GUID.upper()}}}", "cost": "2"},
        {"sub_account_id": f"{ARM}/resourcegroups/rg", "meta_subscription_id": "other", "cost": "4"},
    ]
    valid = silver.validate(staged(spark, rows))
    assert [r["SubAccountId"] for r in valid.orderBy("row_index").collect()] == [ARM, ARM, ARM]
    # Same natural key in three spellings: one silver row (summed), one replacement slice.
    out = silver.transform(valid, run_id="r").collect()
    assert [(r["SubAccountId"], r["BilledCost"], r["x_Slice"]) for r in out] == [
        (ARM, Decimal(7), f"azure_detail|{ARM}|2024-01-05")
    ]
