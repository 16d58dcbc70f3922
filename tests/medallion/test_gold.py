"""Gold transforms on small inline silver DataFrames: detail preferred over Query rows, tags incl. untagged, start/stop."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pyarrow as pa
import pytest

from backend.lake.catalog import SILVER_COSTS
from backend.medallion import gold

# Pure transforms: CI runs these on Sail and, with `--engine jvm`, on Apache Spark (`make test`).
pytestmark = pytest.mark.transform


def silver_rows(spark, rows: list[dict]):
    base = {"x_SourceFamily": "azure_detail", "SubAccountId": "s", "BillingCurrency": "USD", "Tags": []}
    full = []
    for row in rows:
        r = {name: None for name in SILVER_COSTS.schema.names} | base | row
        r["x_ChargeMonth"] = r["x_ChargeDate"].strftime("%Y-%m")
        for money in ("BilledCost", "EffectiveCost"):
            if r[money] is not None:
                r[money] = Decimal(str(r[money]))
        full.append(r)
    return spark.createDataFrame(pa.Table.from_pylist(full, schema=SILVER_COSTS.schema))


def test_query_rows_are_dropped_where_detail_rows_exist(spark):
    df = silver_rows(
        spark,
        [
            {"x_ChargeDate": date(2024, 1, 1), "ResourceId": "r1", "BilledCost": 5},
            {"x_ChargeDate": date(2024, 1, 1), "x_SourceFamily": "azure_query", "BilledCost": 9},
            {"x_ChargeDate": date(2024, 1, 2), "x_SourceFamily": "azure_query", "BilledCost": 7},
        ],
    )
    daily = gold.cost_daily(gold.prefer_detail(df), run_id="r").orderBy("charge_date").collect()
    assert [(str(r["charge_date"]), r["actual_cost"], r["source"]) for r in daily] == [
        ("2024-01-01", Decimal(5), "azure_detail"),
        ("2024-01-02", Decimal(7), "azure_query"),
    ]
    assert daily[0]["resource_group"] == "" and daily[0]["actual_cost_converted"] is None


def _fx(spark, rows):
    return spark.createDataFrame(
        [(*r, None) for r in rows],
        "rate_month string, from_currency string, to_currency string, rate decimal(28,12), rate_date date",
    )


def test_cost_daily_converts_where_a_rate_exists(spark):
    df = silver_rows(
        spark,
        [
            {"x_ChargeDate": date(2024, 1, 1), "BilledCost": 10, "EffectiveCost": 8, "BillingCurrency": c}
            for c in ("EUR", "USD", "GBP")
        ],
    )
    fx = _fx(spark, [("2024-01", "EUR", "USD", Decimal("1.1")), ("2024-01", "EUR", "GBP", Decimal("0.85"))])
    daily = gold.cost_daily(df, run_id="r", fx=fx, reporting_currency="USD").collect()
    got = {r["billing_currency"]: (r["actual_cost_converted"], r["amortized_cost_converted"]) for r in daily}
    # Only rates to the reporting currency count (the EUR -> GBP rate duplicates no row); USD converts at 1;
    # GBP has no rate: null, never 0.
    assert got == {"EUR": (Decimal(11), Decimal("8.8")), "USD": (Decimal(10), Decimal(8)), "GBP": (None, None)}
    assert len(daily) == 3


def test_cost_daily_without_a_reporting_currency_converts_nothing(spark):
    df = silver_rows(spark, [{"x_ChargeDate": date(2024, 1, 1), "BilledCost": 10, "BillingCurrency": "EUR"}])
    fx = _fx(spark, [("2024-01", "EUR", "USD", Decimal("1.1"))])
    (row,) = gold.cost_daily(df, run_id="r", fx=fx).collect()
    assert row["actual_cost_converted"] is None and row["amortized_cost_converted"] is None


def test_conversion_keeps_every_decimal_of_the_product(spark):
    cost, rate = Decimal("1234567.123456789012"), Decimal("0.917312345678")
    df = silver_rows(spark, [{"x_ChargeDate": date(2024, 1, 1), "BilledCost": cost, "BillingCurrency": "USD"}])
    fx = _fx(spark, [("2024-01", "USD", "EUR", rate)])
    (row,) = gold.cost_daily(df, run_id="r", fx=fx, reporting_currency="EUR").collect()
    # 12 decimals, not 6: within one unit of the last place, because the engines round that place
    # differently (JVM Spark half up, Sail half to even, measured on ...1445).
    assert abs(row["actual_cost_converted"] - cost * rate) <= Decimal("1e-12")


def test_cost_by_tag_reports_untagged_per_key(spark):
    df = silver_rows(
        spark,
        [
            {"x_ChargeDate": date(2024, 1, 1), "BilledCost": 5, "Tags": [("env", "prod"), ("team", "a")]},
            {"x_ChargeDate": date(2024, 1, 1), "BilledCost": 3, "Tags": [("env", "dev")]},
            {"x_ChargeDate": date(2024, 1, 1), "BilledCost": 2},
        ],
    )
    got = {(r["tag_key"], r["tag_value"]): r["actual_cost"] for r in gold.cost_by_tag(df, run_id="r").collect()}
    assert got == {
        ("env", "prod"): Decimal(5),
        ("env", "dev"): Decimal(3),
        ("env", "untagged"): Decimal(2),
        ("team", "a"): Decimal(5),
        ("team", "untagged"): Decimal(5),
    }


def test_resource_tags_fold_first_and_last_seen(spark):
    df = silver_rows(
        spark, [{"x_ChargeDate": date(2024, 1, d), "ResourceId": "r1", "Tags": [("env", "prod")]} for d in (3, 4, 5)]
    )
    existing = spark.createDataFrame(
        [("r1", "env", "prod", date(2023, 12, 1), date(2023, 12, 31))],
        "resource_id string, tag_key string, tag_value string, first_seen date, last_seen date",
    )
    row = gold.resource_tags(df, run_id="r", existing=existing).collect()[0]
    assert (row["first_seen"], row["last_seen"]) == (date(2023, 12, 1), date(2024, 1, 5))


def test_started_stopped(spark):
    rows = [
        {"x_ChargeDate": date(2024, 1, 1), "ResourceId": "a", "BilledCost": 1},
        {"x_ChargeDate": date(2024, 1, 2), "ResourceId": "a", "BilledCost": 1},
        {"x_ChargeDate": date(2024, 1, 2), "ResourceId": "b", "BilledCost": 4},
        {"x_ChargeDate": date(2024, 1, 3), "ResourceId": "b", "BilledCost": 10},
        {"x_ChargeDate": date(2024, 1, 4), "ResourceId": "b", "BilledCost": 10},
    ]
    daily = gold.cost_daily(silver_rows(spark, rows), run_id="r")
    events = {
        (r["resource_id"], r["event"], str(r["event_date"])) for r in gold.cost_changes(daily, run_id="r").collect()
    }
    assert events == {("b", "started", "2024-01-02"), ("a", "stopped", "2024-01-02")}


def test_monthly_summary_carries_the_previous_month(spark):
    rows = [
        {"x_ChargeDate": date(2023, 12, 31), "ResourceId": "a", "BilledCost": 4},
        {"x_ChargeDate": date(2024, 1, 1), "ResourceId": "a", "BilledCost": 1},
        {"x_ChargeDate": date(2024, 1, 2), "ResourceId": "b", "BilledCost": 2},
    ]
    daily = gold.cost_daily(silver_rows(spark, rows), run_id="r")
    (row,) = gold.monthly_summary(daily, run_id="r", months=["2024-01"]).collect()
    assert (row["actual_cost"], row["previous_month_actual_cost"]) == (Decimal(3), Decimal(4))
    assert (row["days_with_cost"], row["resource_count"], row["row_count"]) == (2, 2, 2)
