"""Reconciliation flags a mart/silver/source disagreement per day and source, and only that."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from backend.lake.catalog import MONEY, SILVER_COSTS
from backend.lake.delta import lake_from_settings
from backend.mart.load import load_gold
from backend.mart.reconcile import SILVER_TOTALS_SCHEMA, list_mismatches, reconcile, silver_daily_totals
from tests.mart import synthetic_gold

START = dt.date(2026, 3, 1)


@pytest.fixture
def loaded(mart_settings):
    lake = lake_from_settings(mart_settings)
    daily = synthetic_gold.gold_cost_daily(start=START, days=5, rows_per_day=40)
    synthetic_gold.write_gold(lake, daily, tags=False)
    load_gold(mart_settings, lake, run_id="r1")
    return lake, daily


def _silver_from_gold(daily: pa.Table) -> pa.Table:
    grouped = daily.group_by(["charge_date", "source", "billing_currency"]).aggregate([("actual_cost", "sum")])
    return pa.table(
        {
            "charge_date": grouped["charge_date"],
            "source": grouped["source"],
            "currency": grouped["billing_currency"],
            "total": grouped["actual_cost_sum"],
        }
    ).cast(SILVER_TOTALS_SCHEMA)


def test_matching_levels_are_ok(owner, loaded):
    _, daily = loaded
    report = reconcile(owner, silver_totals=_silver_from_gold(daily), run_id="r1")
    assert len(report.rows) == 5 and report.mismatches == []
    assert list_mismatches(owner) == []


def test_injected_mismatches_are_flagged(owner, reader, loaded):
    _, daily = loaded
    silver = _silver_from_gold(daily).to_pylist()
    silver[2]["total"] += Decimal("5.00")  # silver disagrees with the mart on day 3
    silver.append({"charge_date": dt.date(2026, 3, 9), "source": "demo", "currency": "EUR", "total": Decimal(7)})
    day1 = silver[0]
    with owner.begin() as conn:  # the source reported something else for day 1; matched for day 2
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at, reported_total, "
                "currency) VALUES ('demo', 'sub', 'ActualCost', :d1, 'b', now(), :t1, 'EUR'), "
                "('demo', 'sub', 'ActualCost', :d2, 'b', now(), :t2, 'EUR')"
            ),
            {
                "d1": day1["charge_date"],
                "t1": day1["total"] + 1,
                "d2": silver[1]["charge_date"],
                "t2": silver[1]["total"],
            },
        )
    report = reconcile(owner, silver_totals=pa.Table.from_pylist(silver, SILVER_TOTALS_SCHEMA))
    shown = list_mismatches(reader)  # the UI reads through the read-only role
    assert {(r.charge_date, r.status) for r in shown} == {
        (silver[2]["charge_date"], "mismatch"),
        (day1["charge_date"], "mismatch"),
        (dt.date(2026, 3, 9), "missing_in_mart"),
    }
    assert shown == sorted(report.mismatches, key=lambda r: r.charge_date, reverse=True)
    by_day = {r.charge_date: r for r in shown}
    assert "mart - silver = -5.000000" in by_day[silver[2]["charge_date"]].detail
    assert "silver - reported = -1.000000" in by_day[day1["charge_date"]].detail


def test_silver_totals_read_from_the_lake(owner, loaded):
    lake, daily = loaded
    silver = pa.table(
        {
            "SubAccountId": daily["subscription_id"],
            "x_ChargeDate": daily["charge_date"],
            "x_SourceFamily": daily["source"],
            "x_Source": daily["source"],
            "BillingCurrency": daily["billing_currency"],
            "BilledCost": daily["actual_cost"].cast(MONEY),
            "x_ChargeMonth": daily["charge_month"],
        }
    )
    lake.append(SILVER_COSTS.name, silver, partition_by=["x_ChargeMonth"])
    totals = silver_daily_totals(lake, months=["2026-03"])
    assert pc.sum(totals["total"]).as_py() == pc.sum(daily["actual_cost"]).as_py()
    assert reconcile(owner, lake=lake, months=["2026-03"]).mismatches == []


def _silver_rows(rows: list[tuple]) -> pa.Table:
    """(subscription, day, family, source name, billed) -> silver/costs columns the reconciliation reads."""
    sub, day, family, source, billed = zip(*rows, strict=True)
    return pa.table(
        {
            "SubAccountId": pa.array(sub, pa.string()),
            "x_ChargeDate": pa.array(day, pa.date32()),
            "x_SourceFamily": pa.array(family, pa.string()),
            "x_Source": pa.array(source, pa.string()),
            "BillingCurrency": pa.array(["USD"] * len(rows)),
            "BilledCost": pa.array([Decimal(b) for b in billed], MONEY),
            "x_ChargeMonth": pa.array([d.strftime("%Y-%m") for d in day]),
        }
    )


def test_silver_is_counted_by_family_as_gold_counts_it(mart_settings):
    """The mart's source is the granularity family, and gold keeps the best family of a subscription-day:
    Query API rows of a day that also has detail rows are not counted twice; a subscription-day with
    only Query API rows counts them; rows with no subscription are one group."""
    lake = lake_from_settings(mart_settings)
    d1, d2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    lake.append(
        SILVER_COSTS.name,
        _silver_rows(
            [
                ("/subscriptions/a", d1, "azure_detail", "azure", "10"),
                ("/subscriptions/a", d1, "azure_detail", "azure", "5"),
                ("/subscriptions/a", d1, "azure_query", "azure", "15"),  # the same money, aggregated
                ("/subscriptions/b", d1, "azure_query", "azure", "7"),  # b has no detail that day
                (None, d1, "focus", "files", "2"),
                (None, d1, "azure_query", "azure", "2"),
                ("/subscriptions/a", d2, "focus", "demo", "3"),
            ]
        ),
        partition_by=["x_ChargeMonth"],
    )
    totals = {(r["charge_date"], r["source"]): r["total"] for r in silver_daily_totals(lake).to_pylist()}
    assert totals == {(d1, "azure_detail"): 15, (d1, "azure_query"): 7, (d1, "focus"): 2, (d2, "focus"): 3}


def test_a_source_report_is_compared_on_its_family_and_a_lost_day_is_flagged(owner, mart_settings):
    """Sources report per source name (ops.source_cursors), silver and the mart per family: the report of
    'demo' is matched to the family its silver rows have. A reported day silver never got is data loss."""
    lake = lake_from_settings(mart_settings)
    d1, d2, d3 = dt.date(2026, 4, 1), dt.date(2026, 4, 2), dt.date(2026, 4, 3)
    lake.append(
        SILVER_COSTS.name,
        _silver_rows([("/subscriptions/a", d1, "focus", "demo", "3"), ("/subscriptions/a", d2, "focus", "demo", "4")]),
        partition_by=["x_ChargeMonth"],
    )
    with owner.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at, reported_total, "
                "currency) VALUES ('demo', 'a', 'FocusCost', :d1, 'b', now(), 3, 'USD'), "
                "('demo', 'a', 'FocusCost', :d2, 'b', now(), 4.5, 'USD'), "
                "('demo', 'a', 'FocusCost', :d3, 'b', now(), 6, 'USD')"
            ),
            {"d1": d1, "d2": d2, "d3": d3},
        )
    rows = {r.charge_date: r for r in reconcile(owner, lake=lake, months=["2026-04"]).rows}
    assert (rows[d1].source, rows[d1].reported_total, rows[d1].status) == ("focus", 3, "missing_in_mart")
    assert (rows[d2].source, rows[d2].silver_total, rows[d2].reported_total) == ("focus", 4, Decimal("4.5"))
    assert (rows[d3].source, rows[d3].status) == ("demo", "missing_in_silver")
    assert "reported 6.000000" in rows[d3].detail
