"""Savings and waste queries on the read-only role over a hand-made estate loaded into a real mart."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from backend.lake.delta import lake_from_settings
from backend.mart import waste
from backend.mart.load import load_gold
from tests.finops import helpers as h

MARCH = dt.date(2026, 3, 1)


@pytest.fixture
def loaded(mart_settings):
    lake = lake_from_settings(mart_settings)
    h.write(lake, h.estate(), h.changes())
    load_gold(mart_settings, lake, run_id="r1")
    return lake


def test_savings_summary_by_hand(reader, loaded):
    s = waste.savings_summary(reader, start=h.D1, end=h.D2, currency="USD")
    # FOCUS rows: list 34.44, contracted 31.44, effective 27.94; the Azure export row: list 8, effective 7.
    assert s.effective_cost == Decimal("34.94")
    assert s.list_cost == Decimal("42.44") and s.effective_savings == Decimal("7.50")
    assert s.effective_savings_rate == pytest.approx(7.5 / 42.44)
    assert (s.contracted_list_cost, s.contracted_cost, s.contracted_effective_cost) == (
        Decimal("34.44"),
        Decimal("31.44"),
        Decimal("27.94"),
    )
    assert s.negotiated_savings == Decimal("3.00") and s.commitment_savings == Decimal("3.50")
    assert (s.commitment_used, s.commitment_unused) == (Decimal(12), Decimal(2))
    assert s.commitment_utilisation == pytest.approx(12 / 14)
    assert s.contracted_covered == pytest.approx(27.94 / 34.94) and s.list_covered == pytest.approx(1.0)


def test_a_source_without_contracted_cost_or_status_is_not_available(reader, loaded):
    s = waste.savings_summary(reader, start=h.D1, end=h.D2, currency="EUR")
    assert s.effective_savings_rate == pytest.approx(0.5)  # list and effective: an amortized export has both
    assert s.contracted_cost is None and s.negotiated_savings is None and s.commitment_savings is None
    assert s.commitment_used is None and s.commitment_utilisation is None and s.contracted_covered is None


def test_savings_by_month_and_commitments(reader, loaded):
    (month,) = waste.savings_by_month(reader, start=MARCH, end=dt.date(2026, 3, 31), currency="USD")
    assert month.month == MARCH and month.negotiated_savings == Decimal("3.00")
    assert month.commitment_utilisation == pytest.approx(12 / 14)
    (reservation,) = waste.commitments(reader, start=MARCH, end=dt.date(2026, 3, 31), currency="USD")
    assert reservation == waste.Commitment("Reservation", Decimal(12), Decimal(2), pytest.approx(12 / 14))


def test_zero_usage_lists_cost_without_quantity(reader, loaded):
    (lb,) = waste.zero_usage(reader, month=MARCH, currency="USD")  # tax (quantity 0) is not usage
    assert (lb.resource_id, lb.meter_name, lb.monthly_cost) == (h.LB1, "Standard Included LB Rules", Decimal("1.2"))
    assert lb.link == "https://portal.azure.com/#@/resource" + h.LB1


def test_orphans_by_rule(reader, loaded):
    found = waste.orphans(reader, month=MARCH, currency="USD")
    assert [(o.kind, o.resource_id, o.monthly_cost, o.days) for o in found] == [
        ("unattached_disk", h.DISK1, Decimal(2), None),  # rg-b has no VM; disk2 sits beside a running VM
        ("stopped_vm", h.VM2, Decimal("0.5"), 1),  # day 2: its disk billed, no compute hours
        ("idle_public_ip", h.PIP1, Decimal("0.24"), None),
    ]
    assert found[1].meters == "P10 LRS Disk"
    assert [o.kind for o in waste.orphans(reader, month=MARCH, currency="USD", kinds=("idle_public_ip",))] == [
        "idle_public_ip"
    ]
    assert waste.orphans(reader, month=dt.date(2026, 4, 1), currency="USD") == []


def test_cost_changes_reach_the_mart_with_monthly_cost(reader, loaded):
    got = waste.cost_changes(reader, month=MARCH, currency="USD")
    assert [(c.event, c.resource_id, c.event_date, c.daily_cost, c.monthly_cost) for c in got] == [
        ("stopped", h.VM1, h.D2, Decimal(6), Decimal(12)),
        ("started", h.DISK2, h.D1, Decimal(1), Decimal(2)),
    ]
    assert got[0].resource_name == "vm1" and got[0].link.endswith(h.VM1)
    assert waste.waste_months(reader) == [MARCH]


def test_reload_replaces_the_months_cost_changes(mart_settings, reader, loaded):
    h.write(loaded, h.estate(), h.changes()[:1])
    load_gold(mart_settings, loaded, run_id="r2")
    assert [c.resource_id for c in waste.cost_changes(reader, month=MARCH, currency="USD")] == [h.DISK2]


def test_resource_link_only_for_azure_ids():
    assert waste.resource_link(h.VM1) == "https://portal.azure.com/#@/resource" + h.VM1
    assert waste.resource_link("i-0abc123") is None and waste.resource_link("") is None
