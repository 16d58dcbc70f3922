"""Bronze -> silver -> gold end to end on a local lake and on the S3 test server: counts, idempotency, re-rating."""

from __future__ import annotations

from decimal import Decimal

import pyarrow.compute as pc
import pytest

from backend.lake import lake_from_settings
from backend.lake.catalog import (
    GOLD_COST_BY_TAG,
    GOLD_COST_CHANGES,
    GOLD_COST_DAILY,
    GOLD_MONTHLY_SUMMARY,
    SILVER_COSTS,
    SILVER_QUARANTINE,
)
from tests.conftest import make_settings
from tests.medallion.helpers import Bronze, csv_payload, ea_row, focus_payload, focus_row, query_payload, run_medallion

GUID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
SUBSCRIPTION = f"/subscriptions/{GUID}"

QUERY_COLUMNS = [
    ("PreTaxCost", "Number"),
    ("UsageDate", "Number"),
    ("ResourceGroupName", "String"),
    ("Currency", "String"),
]


def _money(table, column) -> Decimal:
    return pc.sum(table.column(column)).as_py() or Decimal(0)


def _first_load(bronze: Bronze) -> None:
    actual = [
        ea_row("01/30/2024", "vm1", "10", tags='"Env": "prod","team": "x"'),
        ea_row("01/30/2024", "vm1", "5"),  # same key: summed with the row above
        ea_row("01/31/2024", "vm2", "7"),
        ea_row("01/31/2024", "vm3", "not-a-number"),  # quarantined
    ]
    amortized = [ea_row("01/30/2024", "vm1", "12"), ea_row("01/31/2024", "vm2", "6")]
    bronze.add("azure_export_ea", csv_payload(actual), batch="ea-1", metric="ActualCost", sub="sub-1")
    bronze.add("azure_export_ea", csv_payload(amortized), batch="ea-1a", metric="AmortizedCost", sub="sub-1")
    focus = [focus_row("2024-02-01", "st1", "3", "2.5"), focus_row("2024-02-01", "st2", "1", "1", tags="")]
    bronze.add("focus", focus_payload(focus), batch="f-1", content_type="application/vnd.apache.parquet")
    # Query rows for a day detail rows also cover (must not double count) and one only they cover.
    query = [[100, 20240130, "rg-a", "USD"], [40, 20240129, "rg-a", "USD"]]
    bronze.add("azure_query", query_payload(query, QUERY_COLUMNS), batch="q-1", metric="ActualCost", sub="sub-1")
    bronze.add("azure_query", b"{oops", batch="q-1", metric="ActualCost", sub="sub-1")  # quarantined whole


def _check_first_load(lake, stats) -> None:
    assert stats.bronze_messages == 5
    assert stats.source_rows == 4 + 2 + 2 + 2 + 1
    assert stats.quarantined == 2
    assert stats.valid_rows + stats.quarantined == stats.source_rows
    assert lake.count(SILVER_QUARANTINE.name) == 2
    rules = sorted(lake.read_arrow(SILVER_QUARANTINE.name, columns=["rule"]).column("rule").to_pylist())
    assert rules == ["invalid_cost", "unparseable_payload"]
    silver = lake.read_arrow(SILVER_COSTS.name)
    # Each silver row says how many source rows it sums: 3 actual rows became 2 rows (the 2 matching
    # amortized rows only set their EffectiveCost), + 2 FOCUS + 2 Query rows.
    assert _money(silver, "x_SourceRowCount") == 3 + 2 + 2
    assert silver.num_rows == 6
    vm1 = [r for r in silver.to_pylist() if (r["ResourceId"] or "").endswith("/vm1")]
    assert len(vm1) == 1
    assert vm1[0]["BilledCost"] == Decimal(15) and vm1[0]["EffectiveCost"] == Decimal(12)
    assert dict(vm1[0]["Tags"]) == {"env": "prod", "team": "x"}
    daily = lake.read_arrow(GOLD_COST_DAILY.name)
    assert _money(daily, "actual_cost") == Decimal(15 + 7 + 3 + 1 + 40)  # the 100 query row is shadowed by detail
    assert _money(daily, "amortized_cost") == Decimal(12 + 6 + Decimal("2.5") + 1)
    assert sorted(stats.affected_months) == ["2024-01", "2024-02"]
    assert lake.count(GOLD_MONTHLY_SUMMARY.name) == 3  # (2024-01, sub-1), (2024-02, sub-f) x currency


@pytest.mark.slow
def test_bronze_to_gold_local_idempotent_and_rerated(spark, tmp_path):
    lake = lake_from_settings(make_settings(tmp_path))
    settings = make_settings(tmp_path)
    bronze = Bronze()
    _first_load(bronze)
    bronze.flush(lake)
    stats = run_medallion(settings, lake, spark, run_id="run-1")
    _check_first_load(lake, stats)
    by_tag = lake.read_arrow(GOLD_COST_BY_TAG.name).to_pylist()
    env = {
        r["tag_value"]: r["actual_cost"]
        for r in by_tag
        if r["tag_key"] == "env" and str(r["charge_date"]) == "2024-01-30"
    }
    assert env == {"prod": Decimal(15)}
    untagged = [r for r in by_tag if r["tag_key"] == "env" and r["tag_value"] == "untagged"]
    assert {str(r["charge_date"]) for r in untagged} == {"2024-01-29", "2024-01-31", "2024-02-01"}

    # Same bronze again: nothing new to process; a full rebuild gives identical counts and sums.
    silver_before = lake.read_arrow(SILVER_COSTS.name)
    gold_before = lake.read_arrow(GOLD_COST_DAILY.name)
    again = run_medallion(settings, lake, spark, run_id="run-2")
    assert again.bronze_files == 0 and again.silver_upserted == 0
    rebuilt = run_medallion(settings, lake, spark, run_id="run-3", full_rebuild=True)
    _check_first_load(lake, rebuilt)
    for table, before in ((SILVER_COSTS.name, silver_before), (GOLD_COST_DAILY.name, gold_before)):
        after = lake.read_arrow(table)
        assert after.num_rows == before.num_rows
    assert _money(lake.read_arrow(SILVER_COSTS.name), "BilledCost") == _money(silver_before, "BilledCost")

    # The same messages landing in bronze again (same Kafka positions) change nothing.
    bronze.offset = 0
    _first_load(bronze)
    bronze.flush(lake)
    replay = run_medallion(settings, lake, spark, run_id="run-4")
    assert replay.bronze_messages == 5
    assert lake.read_arrow(SILVER_COSTS.name).num_rows == silver_before.num_rows
    assert _money(lake.read_arrow(GOLD_COST_DAILY.name), "actual_cost") == _money(gold_before, "actual_cost")
    assert lake.count(SILVER_QUARANTINE.name) == 2

    # Azure re-rates 2024-01-31: vm2 changes, a new vm4 row appears; 2024-01-30 is untouched.
    rerated = [ea_row("01/31/2024", "vm2", "8"), ea_row("01/31/2024", "vm4", "2")]
    bronze.add("azure_export_ea", csv_payload(rerated), batch="ea-2", metric="ActualCost", sub="sub-1", fetched=5)
    bronze.flush(lake)
    rerun = run_medallion(settings, lake, spark, run_id="run-5")
    assert rerun.affected_months == ["2024-01"]
    silver = lake.read_arrow(SILVER_COSTS.name).to_pylist()
    day31 = {r["ResourceId"].rsplit("/", 1)[-1]: (r["BilledCost"], r["EffectiveCost"]) for r in silver
             if str(r["x_ChargeDate"]) == "2024-01-31"}  # fmt: skip
    assert day31 == {"vm2": (Decimal(8), Decimal(6)), "vm4": (Decimal(2), None)}
    daily = lake.read_arrow(GOLD_COST_DAILY.name)
    assert _money(daily, "actual_cost") == Decimal(15 + 8 + 2 + 3 + 1 + 40)
    # Gold for February (not touched) was not rewritten by this run.
    feb = daily.filter(pc.equal(daily["charge_month"], "2024-02")).column("run_id").to_pylist()
    assert set(feb) == {"run-4"}

    # A re-pull where vm4 vanished: its actual cost is removed (no amortized part, so the row goes).
    bronze.add("azure_export_ea", csv_payload([ea_row("01/31/2024", "vm2", "8")]), batch="ea-3", metric="ActualCost",
               sub="sub-1", fetched=6)  # fmt: skip
    bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="run-6")
    names = {r["ResourceId"].rsplit("/", 1)[-1] for r in lake.read_arrow(SILVER_COSTS.name).to_pylist()
             if str(r["x_ChargeDate"]) == "2024-01-31"}  # fmt: skip
    assert names == {"vm2"}
    assert lake.history(SILVER_COSTS.name)[0]["costlake.run_id"] == "run-6"


@pytest.mark.slow
def test_one_subscription_whichever_source_spells_it(spark, tmp_path):
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    bronze = Bronze()
    # The same subscription-day from a FOCUS file (ARM id), an Azure Cost Details report (bare
    # upper-case guid) and a Query API page (no subscription column: the bronze meta's bare guid).
    resource = f"{SUBSCRIPTION}/resourcegroups/rg-a/providers/microsoft.compute/virtualmachines/vm1"
    focus = [focus_row("2024-03-05", "vm1", "3", "3", sub=SUBSCRIPTION) | {"SubAccountName": "Production"}]
    bronze.add("focus", focus_payload(focus), batch="f-1", content_type="application/vnd.apache.parquet")
    detail = [ea_row("03/05/2024", "vm1", "10", sub=GUID.upper(), SubscriptionName="Production")]
    bronze.add("azure_cost_details", csv_payload(detail), batch="cd-1", metric="ActualCost", sub=GUID.upper())
    query = [[100, 20240305, "rg-a", "USD"]]
    bronze.add("azure_query", query_payload(query, QUERY_COLUMNS), batch="q-1", metric="ActualCost", sub=GUID)
    bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="run-1")

    silver = lake.read_arrow(SILVER_COSTS.name).to_pylist()
    assert sorted(r["x_SourceFamily"] for r in silver) == ["azure_detail", "azure_query", "focus"]
    assert {r["SubAccountId"] for r in silver} == {SUBSCRIPTION}
    assert {r["x_Slice"].split("|")[1] for r in silver} == {SUBSCRIPTION}
    # Gold sees one subscription-day, so only the most detailed family counts (not 10 + 3 + 100).
    daily = lake.read_arrow(GOLD_COST_DAILY.name).to_pylist()
    assert {(r["subscription_id"], r["subscription_name"], r["source"]) for r in daily} == {
        (SUBSCRIPTION, "Production", "azure_detail")
    }
    assert sum(r["actual_cost"] for r in daily) == Decimal(10)
    monthly = lake.read_arrow(GOLD_MONTHLY_SUMMARY.name).to_pylist()
    assert [(r["subscription_id"], r["actual_cost"]) for r in monthly] == [(SUBSCRIPTION, Decimal(10))]

    # A re-pull of that day spelling the guid in lower case replaces the row instead of adding one.
    detail = [ea_row("03/05/2024", "vm1", "11", sub=GUID, SubscriptionName="Production")]
    bronze.add("azure_cost_details", csv_payload(detail), batch="cd-2", metric="ActualCost", sub=GUID, fetched=5)
    bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="run-2")
    rows = [r for r in lake.read_arrow(SILVER_COSTS.name).to_pylist() if r["x_SourceFamily"] == "azure_detail"]
    assert [(r["SubAccountId"], r["ResourceId"], r["BilledCost"]) for r in rows] == [
        (SUBSCRIPTION, resource, Decimal(11))
    ]
    assert _money(lake.read_arrow(GOLD_COST_DAILY.name), "actual_cost") == Decimal(11)


@pytest.mark.slow
def test_bronze_to_gold_on_s3(spark, s3_settings):
    lake = lake_from_settings(s3_settings)
    bronze = Bronze()
    _first_load(bronze)
    bronze.flush(lake)
    stats = run_medallion(s3_settings, lake, spark, run_id="s3-1")
    _check_first_load(lake, stats)
    again = run_medallion(s3_settings, lake, spark, run_id="s3-2")
    assert again.silver_upserted == 0


def _gold_snapshot(lake) -> dict[str, list[tuple]]:
    """Every monthly gold table without its run ids, in a stable order."""
    tables = (
        GOLD_COST_DAILY.name,
        GOLD_MONTHLY_SUMMARY.name,
        GOLD_COST_BY_TAG.name,
        GOLD_COST_CHANGES.name,
    )
    snap = {}
    for table in tables:
        rows = lake.read_arrow(table).drop_columns(["run_id"]).to_pylist()
        snap[table] = sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)
    return snap


@pytest.mark.slow
def test_an_increment_leaves_gold_as_a_full_rebuild_would(spark, tmp_path):
    """The increment recomputes only its month from silver and reads the month before from gold; the
    monthly summary's previous month and start/stop at the month boundary must still come out exact."""
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    bronze = Bronze()
    history = [
        focus_row("2024-01-30", "st1", "5", "5"),
        focus_row("2024-01-31", "st1", "6", "6"),
        focus_row("2024-01-31", "st2", "9", "9"),
        focus_row("2024-02-01", "st1", "7", "7"),
        focus_row("2024-02-02", "st1", "4", "4", sub="sub-g"),
    ]
    bronze.add("focus", focus_payload(history), batch="f-1", content_type="application/vnd.apache.parquet")
    bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="run-1")
    day = [focus_row("2024-02-03", "st1", "20", "18"), focus_row("2024-02-03", "st3", "2", "2", tags="")]
    bronze.add("focus", focus_payload(day), batch="f-2", content_type="application/vnd.apache.parquet")
    bronze.flush(lake)
    increment = run_medallion(settings, lake, spark, run_id="run-2")
    assert increment.affected_months == ["2024-02"]
    after_increment = _gold_snapshot(lake)
    run_medallion(settings, lake, spark, run_id="run-3", full_rebuild=True)
    assert _gold_snapshot(lake) == after_increment
    summary = [r for r in lake.read_arrow(GOLD_MONTHLY_SUMMARY.name).to_pylist() if r["charge_month"] == "2024-02"]
    assert {r["subscription_id"]: r["previous_month_actual_cost"] for r in summary}["sub-f"] == Decimal(20)
