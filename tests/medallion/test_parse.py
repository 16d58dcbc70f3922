"""Payload parsing and per-format column mappings (pure Arrow, no Spark)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from backend.medallion import parse
from tests.medallion.helpers import Bronze, csv_payload, ea_row, focus_payload, focus_row, query_payload


def test_ea_csv_reads_every_column_as_string_and_drops_the_bom():
    payload = csv_payload([ea_row("01/05/2024", "vm1", "1.000000000001", tags='"env": "prod"')])
    table = parse.read_payload("azure_export_ea", "text/csv", payload)
    assert table.column_names[0] == "BillingAccountId"
    assert all(str(t) == "string" for t in table.schema.types)
    mapped = parse.map_columns(table, "azure_export_ea").to_pylist()[0]
    assert mapped["cost"] == "1.000000000001"  # exact text, never a float
    assert mapped["charge_date"] == "01/05/2024"
    assert mapped["tags_raw"] == '"env": "prod"'
    assert mapped["commitment_discount_id"] is None  # "" becomes null


def test_mca_camel_case_columns_map_case_insensitively():
    header = ["date", "subscriptionId", "costInBillingCurrency", "billingCurrency", "resourceGroupName", "meterId"]
    payload = csv_payload(
        [dict(zip(header, ["2024-01-05", "s", "2.5", "EUR", "rg", "m"], strict=True))], header, bom=False
    )
    mapped = parse.map_columns(parse.read_payload("azure_export_mca", "text/csv", payload), "azure_export_mca")
    row = mapped.to_pylist()[0]
    assert (row["sub_account_id"], row["cost"], row["billing_currency"], row["resource_group"]) == (
        "s",
        "2.5",
        "EUR",
        "rg",
    )


def test_query_page_keeps_numbers_exact_and_maps_groupings():
    payload = query_payload(
        [["COST", 20240105, "rg-a", "USD"]],
        [("PreTaxCost", "Number"), ("UsageDate", "Number"), ("ResourceGroupName", "String"), ("Currency", "String")],
    )
    payload = payload.replace(b'"COST"', b"0.123456789012345678")  # a JSON number with more digits than a float
    row = parse.map_columns(parse.read_payload("azure_query", "application/json", payload), "azure_query").to_pylist()[
        0
    ]
    assert row["cost"] == "0.123456789012345678"
    assert row["charge_date"] == "20240105"
    assert row["resource_group"] == "rg-a"


def test_focus_parquet_null_literal_becomes_null():
    payload = focus_payload([focus_row("2024-01-05", "st1", "3", "2.5")])
    row = parse.map_columns(
        parse.read_payload("focus", "application/vnd.apache.parquet", payload), "focus"
    ).to_pylist()[0]
    assert row["charge_class"] is None  # the literal "NULL"
    assert row["meter_id"] == "sku-1"
    assert row["billed_cost"] == "3" and row["effective_cost"] == "2.5"


def test_undecodable_message_becomes_one_failure_row_with_the_payload():
    bronze = Bronze().add("azure_query", b"{not json", batch="b").add("mystery", b"x", batch="b").table()
    staged = parse.explode_arrow(bronze).to_pylist()
    assert [r["row_index"] for r in staged] == [-1, -1]
    assert staged[0]["raw_payload"] == "{not json"
    assert "unknown payload format" in staged[1]["parse_error"]


@pytest.mark.parametrize("fmt", ["azure_cost_details", "azure_export_ea"])
def test_explode_keeps_lineage(fmt):
    payload = csv_payload([ea_row("2024-01-05", "a", "1"), ea_row("2024-01-05", "b", "2")])
    staged = parse.explode_arrow(Bronze().add(fmt, payload, batch="b1", metric="ActualCost").table()).to_pylist()
    assert [(r["row_index"], r["offset"], r["batch_id"], r["metric"]) for r in staged] == [
        (0, 0, "b1", "ActualCost"),
        (1, 0, "b1", "ActualCost"),
    ]


def test_grouped_explode_equals_one_message_at_a_time():
    """Same-layout payloads are mapped in one pass; the rows and lineage must equal the per-message path."""
    focus = focus_payload([focus_row("2024-02-01", "st1", "3", "2.5"), focus_row("2024-02-02", "st2", "1", "1")])
    ea = csv_payload([ea_row("2024-01-05", "a", "1")])
    bronze = (
        Bronze()
        .add("focus", focus, batch="f1", content_type="application/vnd.apache.parquet")
        .add("focus", focus, batch="f2", content_type="application/vnd.apache.parquet")
        .add("azure_query", b"{broken", batch="q")  # a failure between two groups
        .add("azure_export_ea", ea, batch="e1", metric="ActualCost")
        .add("azure_export_ea", ea, batch="e2", metric="AmortizedCost")
        .add("focus", focus, batch="f3", content_type="application/vnd.apache.parquet")
        .table()
    )
    grouped = parse.explode_arrow(bronze)
    one_by_one = pa.concat_tables([parse.explode_row(r) for r in bronze.select(parse.BRONZE_INPUT_COLUMNS).to_pylist()])
    assert grouped.num_rows == 2 + 2 + 1 + 1 + 1 + 2
    assert grouped.to_pylist() == one_by_one.to_pylist()
    tables = list(parse.explode_rows(bronze.select(parse.BRONZE_INPUT_COLUMNS).to_pylist()))
    assert len(tables) == 4  # focus x2 | the failure row | ea x2 | focus


def test_a_group_holds_at_most_group_rows_and_splitting_changes_no_row(monkeypatch):
    """A bronze batch of hundreds of same-layout payloads is mapped in groups of at most GROUP_ROWS rows
    (one group held 8 GB of staging text at 5M); a payload is never split, and the rows stay the same."""
    rows = [focus_row(f"2024-02-{d:02d}", f"st{d}", "3", "2.5") for d in range(1, 4)]
    bronze = Bronze()
    for b in range(5):
        bronze.add("focus", focus_payload(rows), batch=f"f{b}", content_type="application/vnd.apache.parquet")
        if b == 2:
            bronze.add("azure_query", b"{broken", batch="q")  # its failure row ends a group: the next starts empty
    records = bronze.table().select(parse.BRONZE_INPUT_COLUMNS).to_pylist()
    whole = pa.concat_tables(parse.explode_rows(records))
    monkeypatch.setattr(parse, "GROUP_ROWS", 7)  # two payloads (6 rows) fit, a third would not
    tables = list(parse.explode_rows(records))
    assert [t.num_rows for t in tables] == [6, 3, 1, 6]
    assert pa.concat_tables(tables).to_pylist() == whole.to_pylist()
