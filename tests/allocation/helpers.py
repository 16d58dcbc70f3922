"""A hand-made tagged estate for the allocation tests: amounts chosen so every owner's share adds up by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa

from backend.lake.catalog import GOLD_RESOURCE_TAGS
from backend.lake.delta import Lake
from tests.finops import helpers as finops

SUB1 = "/subscriptions/00000000-0000-0000-0000-000000000001"
SUB2 = "/subscriptions/00000000-0000-0000-0000-000000000002"
MARCH, APRIL = dt.date(2026, 3, 1), dt.date(2026, 4, 1)


def rid(sub: str, rg: str, name: str) -> str:
    return f"{sub}/resourcegroups/{rg}/providers/microsoft.compute/virtualmachines/{name}"


VM_PAY = rid(SUB1, "rg-pay", "vm-pay")
VM_WEB = rid(SUB1, "rg-web", "vm-web")
VM_CC = rid(SUB1, "rg-web", "vm-cc")  # no team tag; a cost-center in two spellings
VM_ORPHAN = rid(SUB1, "rg-misc", "vm-orphan")  # no tags at all
NET_SHARED = rid(SUB2, "rg-hub", "fw-hub")

TAGS = {
    VM_PAY: {"team": "Payments"},
    VM_WEB: {"team": "frontend", "cost center": "CC-1"},
    VM_CC: {"cost-center": "CC-2"},
    NET_SHARED: {"env": "prod"},
}


def _row(day: dt.date, resource_id: str, sub: str, rg: str, service: str, cost, *, currency="USD", actual=None) -> dict:
    r = finops.row(day, resource_id, rg, service, "meter", lst=cost, con=cost, eff=cost, act=actual, qty=1,
                   currency=currency, sub=sub)  # fmt: skip
    r["subscription_name"] = {SUB1: "apps", SUB2: "shared"}.get(sub, "")
    return r


def estate() -> list[dict]:
    """March and April, USD (plus a EUR row): payments 60, frontend 30, cost-center only 10, untagged 7,
    shared subscription 20, tax 0.01 (no resource). April repeats March with the shared cost 10."""
    rows = []
    for month, shared in ((MARCH, "20"), (APRIL, "10")):
        rows += [
            _row(month, VM_PAY, SUB1, "rg-pay", "Virtual Machines", "60"),
            _row(month, VM_WEB, SUB1, "rg-web", "Virtual Machines", "30"),
            _row(month, VM_CC, SUB1, "rg-web", "Storage", "10"),
            _row(month, VM_ORPHAN, SUB1, "rg-misc", "Storage", "7"),
            _row(month, NET_SHARED, SUB2, "rg-hub", "Azure Firewall", shared),
            _row(month, "", "", "", "", "0.01"),
        ]
    rows.append(_row(MARCH, rid(SUB1, "rg-eu", "vm-eu"), SUB1, "rg-eu", "Virtual Machines", "5", currency="EUR"))
    return rows


def write(lake: Lake, rows: list[dict] | None = None) -> None:
    finops.write(lake, rows if rows is not None else estate())
    tags = [
        {"resource_id": res, "tag_key": k, "tag_value": v, "first_seen": MARCH, "last_seen": dt.date(2026, 4, 30),
         "run_id": "t"}
        for res, kv in TAGS.items()
        for k, v in kv.items()
    ]  # fmt: skip
    lake.overwrite(GOLD_RESOURCE_TAGS.name, pa.Table.from_pylist(tags, schema=GOLD_RESOURCE_TAGS.schema), run_id="t")


def d(value: str) -> Decimal:
    return Decimal(value)
