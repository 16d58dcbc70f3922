"""Allocation in a real mart: versions saved by editors (audited), assign and split rules, conservation to the cent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from backend.allocation.rules import RulesError, parse_yaml
from backend.auth import PermissionDenied, Principal, Role
from backend.lake.delta import lake_from_settings
from backend.mart import allocation
from backend.mart.load import load_gold
from tests.allocation import helpers as h

EDITOR = Principal(email="ed@example.com", name="Ed", role=Role.editor)
VIEWER = Principal(email="vi@example.com", name="Vi", role=Role.viewer)

RULES = """
version: 1
tags:
  aliases: {costcenter: cost-center}
rules:
  - id: shared
    match: {subscription: shared}
    split: {method: proportional}
  - id: team
    match: {tag: team}
"""


@pytest.fixture
def loaded(mart_settings, owner):
    lake = lake_from_settings(mart_settings)
    h.write(lake)
    load_gold(mart_settings, lake, run_id="r1")
    return lake


def _by_owner(reader, month=h.MARCH, currency="USD") -> dict[str, Decimal]:
    rows = allocation.owner_months(reader, start=month, end=month, currency=currency)
    return {r["owner"]: r["cost"] for r in rows}


def _conserved(owner_engine) -> list:
    """Per month and currency: source cost (the mart's aggregate) minus allocated cost, where it differs."""
    sql = """WITH src AS (SELECT a.charge_month, cur.currency_code AS c, sum(a.amortized_cost) AS e, sum(a.actual_cost) AS a
                          FROM mart.agg_cost_resource_monthly a JOIN mart.dim_currency cur USING (currency_key)
                          GROUP BY 1, 2),
                  out AS (SELECT charge_month, billing_currency AS c, sum(amortized_cost) AS e, sum(actual_cost) AS a
                          FROM mart.cost_allocation GROUP BY 1, 2)
             SELECT * FROM src FULL JOIN out USING (charge_month, c)
             WHERE round(src.e, 2) IS DISTINCT FROM round(out.e, 2) OR round(src.a, 2) IS DISTINCT FROM round(out.a, 2)"""
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


def test_no_rules_leaves_everything_unallocated(owner, reader, loaded):
    result = allocation.recompute(owner)
    assert result.rules_version is None and result.unallocated_share == pytest.approx(1.0)
    assert _by_owner(reader) == {allocation.UNALLOCATED: Decimal("127.01")}
    assert _conserved(owner) == []


def test_assign_by_tag_and_proportional_split_of_a_subscription(owner, reader, loaded):
    result = allocation.save_rules(owner, RULES, actor=EDITOR, comment="first rules")
    assert result.rules_version == 1
    march = _by_owner(reader)
    # The shared 20 follows the direct cost: payments 60, frontend 30 -> 13.33 and 6.67 (exact to the cent).
    assert abs(march["payments"] - Decimal("73.333333333333")) < Decimal("0.000001")
    assert abs(march["frontend"] - Decimal("36.666666666667")) < Decimal("0.000001")
    assert march["payments"] + march["frontend"] == Decimal("110")  # 60 + 30 + 20, exactly
    assert march[allocation.UNALLOCATED] == Decimal("17.01")  # cost-center only 10, untagged 7, tax 0.01
    assert _conserved(owner) == []
    summary = allocation.month_summary(reader, month=h.MARCH, currency="USD")
    assert summary.unallocated_share == pytest.approx(17.01 / 127.01) and summary.rules_version == 1
    # The FOCUS columns: the rule, its method details and the version that produced each row.
    with owner.connect() as conn:
        row = conn.execute(
            sa.text("SELECT allocated_method_id, method, allocated_method_details, rules_version FROM mart.cost_allocation"
                    " WHERE resource_id = :r AND owner = 'payments' AND charge_month = :m"),
            {"r": h.NET_SHARED, "m": h.MARCH},
        ).one()  # fmt: skip
    assert row[0] == "shared" and row[1] == "split" and '"method": "proportional"' in row[2] and row[3] == 1


def test_split_modes_even_and_fixed_and_the_unallocated_catch_all(owner, reader, loaded):
    rules = """
rules:
  - id: team
    match: {tag: team}
  - id: shared-fixed
    match: {service: azure firewall}
    split: {method: fixed, percentages: {payments: 70, frontend: 20, security: 10}}
  - id: rest
    match: {unallocated: true}
    split: {method: even}
"""
    allocation.save_rules(owner, rules, actor=EDITOR)
    march = _by_owner(reader)
    # Firewall 20 -> 14 / 4 / 2. The rest (10 + 7 + 0.01 = 17.01) evenly over the month's direct owners
    # (payments, frontend): 8.505 each.
    assert march["security"] == Decimal("2")
    assert march["payments"] == Decimal("60") + Decimal("14") + Decimal("8.505")
    assert march["frontend"] == Decimal("30") + Decimal("4") + Decimal("8.505")
    assert allocation.UNALLOCATED not in march
    # EUR has no direct owner that month: the even split has no basis, so it stays unallocated, saying why.
    eur = allocation.unallocated_reasons(reader, month=h.MARCH, currency="EUR")
    assert [(r["reason"], r["rule"], r["cost"]) for r in eur] == [("no_basis", "rest", Decimal("5"))]
    assert _conserved(owner) == []


def test_regex_resource_group_rules_first_match_wins(owner, reader, loaded):
    rules = """
rules:
  - id: web-group
    match: {resource_group: RG-WEB}
    owner: web-team
  - id: team
    match: {tag: team}
  - id: orphan
    match: {resource_id: "/virtualmachines/vm-orph"}
    owner: ops
"""
    allocation.save_rules(owner, rules, actor=EDITOR)
    march = _by_owner(reader)
    assert march["web-team"] == Decimal("40")  # vm-web (tagged frontend) and vm-cc: the group rule comes first
    assert march["payments"] == Decimal("60") and march["ops"] == Decimal("7")
    assert "frontend" not in march


def test_aliases_and_inheritance_feed_rules_and_coverage(owner, reader, loaded):
    rules = """
tags:
  aliases: {costcenter: cost-center}
  inherit:
    resource_groups: {"apps/rg-misc": {team: ops}}
    subscriptions: {"00000000-0000-0000-0000-000000000002": {cost center: CC-9}}
rules:
  - id: team
    match: {tag: team}
  - id: cc
    match: {tag: cost-center}
"""
    allocation.save_rules(owner, rules, actor=EDITOR)
    march = _by_owner(reader)
    assert march["ops"] == Decimal("7")  # inherited from its resource group
    # "cost center" and "cost-center" are one key: vm-cc's CC-2; the shared subscription inherits CC-9.
    assert march["cc-2"] == Decimal("10") and march["cc-9"] == Decimal("20")
    cover = {(r["month"], r["tag_key"]): r for r in allocation.coverage(reader, currency="USD")}
    cc = cover[(h.MARCH, "cost-center")]
    assert cc["total_cost"] == Decimal("127.01")
    assert cc["untagged_cost"] == Decimal("67.01")  # payments 60, untagged 7, tax 0.01 lack it
    assert ("2026-03-01", "cost center") not in cover and (h.MARCH, "cost center") not in cover


def test_versions_roles_audit_and_bad_input(owner, reader, loaded):
    with pytest.raises(PermissionDenied, match="editor"):
        allocation.save_rules(owner, RULES, actor=VIEWER)
    with pytest.raises(RulesError, match="line"):
        allocation.save_rules(owner, "rules: [\n  - id: x\n  match", actor=EDITOR)
    with pytest.raises(RulesError, match="add up to 90"):
        allocation.save_rules(
            owner,
            "rules:\n  - id: f\n    match: {service: x}\n    split: {method: fixed, percentages: {a: 50, b: 40}}",
            actor=EDITOR,
        )
    assert allocation.current_rules(owner) is None  # nothing was saved by the refused attempts
    first = allocation.save_rules(owner, RULES, actor=EDITOR, comment="v1")
    again = allocation.save_rules(owner, parse_yaml(RULES), actor=EDITOR)  # the same rules: no new version
    second = allocation.save_rules(owner, RULES.replace("proportional", "even"), actor=EDITOR, comment="even")
    assert (first.rules_version, again.rules_version, second.rules_version) == (1, 1, 2)
    versions = allocation.list_versions(owner)
    assert [v["version"] for v in versions] == [2, 1] and versions[0]["created_by"] == "ed@example.com"
    assert allocation.get_version(owner, 1).ruleset == parse_yaml(RULES)
    assert allocation.state(reader).rules_version == 2
    with owner.connect() as conn:
        audit = conn.execute(
            sa.text("SELECT who, action, target FROM ops.user_audit WHERE action = 'allocation.rules.save' ORDER BY audit_id")
        ).all()  # fmt: skip
    assert [tuple(a) for a in audit] == [
        ("ed@example.com", "allocation.rules.save", "rules version 1"),
        ("ed@example.com", "allocation.rules.save", "rules version 2"),
    ]


def test_conservation_to_the_cent_with_many_owners(owner, reader, mart_settings):
    """Thirds and sevenths: splits that do not divide evenly still add up exactly per month and currency."""
    lake = lake_from_settings(mart_settings)
    rows = h.estate()
    for i in range(7):
        res = h.rid(h.SUB1, f"rg-{i}", f"vm-{i}")
        rows.append(h._row(h.MARCH, res, h.SUB1, f"rg-{i}", "Virtual Machines", f"{i + 1}.333333333333"))
        h.TAGS[res] = {"team": f"team-{i}"}
    try:
        h.write(lake, rows)
    finally:
        for i in range(7):
            h.TAGS.pop(h.rid(h.SUB1, f"rg-{i}", f"vm-{i}"))
    load_gold(mart_settings, lake, run_id="r1")
    allocation.save_rules(
        owner,
        "rules:\n  - id: team\n    match: {tag: team}\n  - id: rest\n    match: {unallocated: true}\n"
        "    split: {method: proportional}",
        actor=EDITOR,
    )
    assert _conserved(owner) == []
    with owner.connect() as conn:
        total = conn.execute(
            sa.text("SELECT sum(amortized_cost) FROM mart.cost_allocation WHERE charge_month = :m AND billing_currency = 'USD'"),
            {"m": dt.date(2026, 3, 1)},
        ).scalar()  # fmt: skip
    assert total == Decimal("127.01") + sum(Decimal(f"{i + 1}.333333333333") for i in range(7))
