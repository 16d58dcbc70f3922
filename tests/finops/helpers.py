"""Hand-made gold rows for the waste and savings tests: every value chosen so the expected figures add up by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa

from backend.lake.catalog import GOLD_COST_CHANGES, GOLD_COST_DAILY
from backend.lake.delta import Lake

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
_MONEY = ("actual_cost", "amortized_cost", "list_cost", "quantity", "contracted_cost",
          "commitment_used_cost", "commitment_unused_cost")  # fmt: skip


def rid(rg: str, arm_type: str, name: str) -> str:
    return f"{SUB}/resourcegroups/{rg}/providers/{arm_type}/{name}"


VM1 = rid("rg-a", "microsoft.compute/virtualmachines", "vm1")
VM2 = rid("rg-c", "microsoft.compute/virtualmachines", "vm2")
DISK1 = rid("rg-b", "microsoft.compute/disks", "disk1")
DISK2 = rid("rg-a", "microsoft.compute/disks", "disk2")
PIP1 = rid("rg-b", "microsoft.network/publicipaddresses", "pip1")
LB1 = rid("rg-a", "microsoft.network/loadbalancers", "lb1")
DB1 = rid("rg-a", "microsoft.sql/servers", "sql1/databases/db1")
RESERVATION = "/providers/microsoft.capacity/reservationorders/ro1/reservations/r1"


def row(day: dt.date, resource_id: str, rg: str, category: str, meter: str, *, lst, con, eff, qty,
        used=0, unused=0, act=None, pricing="OnDemand", charge="Usage", source="focus", currency="USD",
        sub: str = SUB) -> dict:  # fmt: skip
    """One gold cost_daily row; money as given (None = the source does not carry it)."""
    r = {
        name: "" for name in GOLD_COST_DAILY.schema.names if pa.types.is_string(GOLD_COST_DAILY.schema.field(name).type)
    }
    r |= {
        "charge_date": day,
        "charge_month": day.strftime("%Y-%m"),
        "subscription_id": sub,
        "resource_group": rg,
        "resource_id": resource_id,
        "resource_name": resource_id.rsplit("/", 1)[-1],
        "service_name": category,
        "meter_category": category,
        "meter_name": meter,
        "pricing_model": pricing,
        "charge_category": charge,
        "billing_currency": currency,
        "source": source,
        "row_count": 1,
        "run_id": "t",
        "actual_cost": eff if act is None else act,
        "amortized_cost": eff,
        "list_cost": lst,
        "quantity": qty,
        "contracted_cost": con,
        "commitment_used_cost": used,
        "commitment_unused_cost": unused,
    }
    for name in _MONEY:
        if r[name] is not None:
            r[name] = Decimal(str(r[name]))
    for name in ("actual_cost_converted", "amortized_cost_converted"):
        r[name] = None
    return r


def estate() -> list[dict]:
    """Two March days of a small estate: a reserved VM, its reservation's idle hours, a database, disks, an IP,
    a load balancer billed without usage, a VM stopped on day 2, tax, an Azure-export row and a EUR row."""
    rows = []
    for day in (D1, D2):
        rows += [
            row(day, VM1, "rg-a", "Virtual Machines", "D4s v5", lst=10, con=9, eff=6, act=0, qty=24, used=6,
                pricing="Reservation"),
            row(day, DISK1, "rg-b", "Storage", "P10 LRS Disk", lst=1, con=1, eff=1, qty="0.0333"),
            row(day, DISK2, "rg-a", "Storage", "P10 LRS Disk", lst=1, con=1, eff=1, qty="0.0333"),
            row(day, PIP1, "rg-b", "Virtual Network", "Standard IPv4 Static Public IP", lst="0.12", con="0.12",
                eff="0.12", qty=24),
            row(day, LB1, "rg-a", "Load Balancer", "Standard Included LB Rules", lst="0.6", con="0.6", eff="0.6",
                qty=0),
            row(day, VM2, "rg-c", "Storage", "P10 LRS Disk", lst="0.5", con="0.5", eff="0.5", qty="0.0333"),
        ]  # fmt: skip
    rows += [
        row(D1, VM2, "rg-c", "Virtual Machines", "D2s v5", lst=3, con=3, eff=3, qty=24),
        row(D1, RESERVATION, "", "Virtual Machines", "D4s v5", lst=0, con=0, eff=2, act=0, qty=5, unused=2,
            pricing="Reservation"),
        row(D1, DB1, "rg-a", "SQL Database", "vCore", lst=5, con=4, eff=4, qty=24),
        # The reservation's monthly payment: billed, never effective (its usage carries it); not a saving.
        row(D1, RESERVATION, "", "Virtual Machines", "Reservation Purchase", lst=14, con=14, eff=0, act=14, qty=1,
            pricing="Reservation", charge="Purchase"),
        row(D1, "", "", "", "", lst=0, con=0, eff="0.5", qty=0, charge="Tax"),
        # An Azure amortized export of another subscription: list and effective, no contracted, no status.
        row(D1, "/subscriptions/t/resourcegroups/rg-z/providers/microsoft.web/sites/app", "rg-z", "Azure App Service",
            "P1 v3 App", lst=8, con=None, eff=7, qty=24, used=None, unused=None, source="azure_detail", sub="/subscriptions/t"),
        row(D1, "/subscriptions/e/x", "rg-e", "Storage", "Hot LRS Data Stored", lst=100, con=None, eff=50, qty=1,
            used=None, unused=None, source="azure_detail", currency="EUR", sub="/subscriptions/e"),
    ]  # fmt: skip
    return rows


def changes() -> list[dict]:
    return [
        {"resource_id": DISK2, "subscription_id": SUB, "resource_group": "rg-a", "service_name": "Storage",
         "event": "started", "event_date": D1, "daily_cost": Decimal(1), "billing_currency": "USD"},
        {"resource_id": VM1, "subscription_id": SUB, "resource_group": "rg-a", "service_name": "Virtual Machines",
         "event": "stopped", "event_date": D2, "daily_cost": Decimal(6), "billing_currency": "USD"},
    ]  # fmt: skip


def write(lake: Lake, rows: list[dict], cost_changes: list[dict] | None = None) -> None:
    daily = pa.Table.from_pylist(rows, schema=GOLD_COST_DAILY.schema)
    months = sorted({r["charge_month"] for r in rows})
    where = "charge_month IN (" + ", ".join(f"'{m}'" for m in months) + ")"
    lake.replace_where(GOLD_COST_DAILY.name, daily, predicate=where, run_id="t", partition_by=["charge_month"])
    if cost_changes is not None:
        rows_c = [c | {"run_id": "t", "charge_month": c["event_date"].strftime("%Y-%m")} for c in cost_changes]
        lake.replace_where(
            GOLD_COST_CHANGES.name,
            pa.Table.from_pylist(rows_c, schema=GOLD_COST_CHANGES.schema),
            predicate=where,
            run_id="t",
            partition_by=["charge_month"],
        )
