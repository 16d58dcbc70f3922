"""Reconciliation flags a mart/silver/source disagreement per day and source, and only that."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from backend.lake.delta import lake_from_settings
from backend.mart import testing
from backend.mart.load import load_gold
from backend.mart.reconcile import SILVER_TOTALS_SCHEMA, list_mismatches, reconcile, silver_daily_totals
from backend.medallion.schemas import MONEY, SILVER_COSTS

START = dt.date(2026, 3, 1)


@pytest.fixture
def loaded(mart_settings):
    lake = lake_from_settings(mart_settings)
    daily = testing.gold_cost_daily(start=START, days=5, rows_per_day=40)
    testing.write_gold(lake, daily, tags=False)
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
            "x_ChargeDate": daily["charge_date"],
            "x_Source": daily["source"],
            "BillingCurrency": daily["billing_currency"],
            "BilledCost": daily["actual_cost"].cast(MONEY),
            "x_ChargeMonth": daily["charge_month"],
        }
    )
    lake.append(SILVER_COSTS, silver, partition_by=["x_ChargeMonth"])
    totals = silver_daily_totals(lake, months=["2026-03"])
    assert pc.sum(totals["total"]).as_py() == pc.sum(daily["actual_cost"]).as_py()
    assert reconcile(owner, lake=lake, months=["2026-03"]).mismatches == []
