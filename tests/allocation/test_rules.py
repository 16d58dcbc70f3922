"""The rule set: YAML round trip (GitOps), validation that names what to fix, key normalisation and the merge preview."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from backend.allocation import report
from backend.allocation.rules import RulesError, RuleSet, export_yaml, merge_preview, normalise_key, parse_yaml
from backend.allocation.sql import POSTGRES, SPARK, build

FULL = """
version: 1
tags:
  normalise_separators: true
  aliases: {costcenter: cost-center, environment: env}
  inherit:
    subscriptions: {contoso-shared: {team: platform}}
    resource_groups: {"contoso-prod/rg-net-hub": {team: platform, "Cost Center": CC-9}}
rules:
  - id: shared-subscription
    description: shared by the teams
    match: {subscription: contoso-shared}
    split: {method: proportional}
  - id: team-tag
    match: {tag: team}
  - id: payments-env
    match: {tag: "env=prod"}
    owner: payments
  - id: api-groups
    match: {resource_id: "/resourcegroups/rg-(api|batch)-"}
    owner: payments
  - id: firewall
    match: {service: Azure Firewall}
    split: {method: fixed, percentages: {payments: 60, frontend: 40}}
  - id: rest
    match: {unallocated: true}
    split: {method: even, owners: [payments, frontend]}
"""


def test_yaml_round_trip_is_lossless_and_stable():
    ruleset = parse_yaml(FULL)
    text = export_yaml(ruleset)
    assert parse_yaml(text) == ruleset
    assert export_yaml(parse_yaml(text)) == text  # a GitOps diff shows only what a user changed
    assert text.startswith("version: 1\n")
    assert [r.id for r in ruleset.rules] == ["shared-subscription", "team-tag", "payments-env", "api-groups",
                                            "firewall", "rest"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [\n  - id: a\n    match", "not valid YAML at line"),
        ("- just a list", "must be a mapping"),
        ("rules:\n  - id: a\n    match: {}\n    owner: x", "exactly one of"),
        ("rules:\n  - id: a\n    match: {service: a, tag: b}\n    owner: x", "exactly one of"),
        ("rules:\n  - id: a\n    match: {service: a}", "give an owner"),
        ("rules:\n  - id: a\n    match: {service: a}\n    owner: x\n  - id: a\n    match: {service: b}\n    owner: y",
         "used twice"),
        ("rules:\n  - id: A B\n    match: {service: a}\n    owner: x", "lower-case"),
        ("rules:\n  - id: a\n    match: {resource_id: '(?<=x)y'}\n    owner: x", "look-around"),
        ("rules:\n  - id: a\n    match: {resource_id: '(unclosed'}\n    owner: x", "not a valid regex"),
        ("rules:\n  - id: a\n    match: {service: a}\n    split: {method: fixed, percentages: {x: 50}}", "add up to 50"),
        ("rules:\n  - id: a\n    match: {service: a}\n    split: {method: even, percentages: {x: 100}}",
         "only for the fixed"),
        ("rules:\n  - id: a\n    match: {service: a}\n    split: {method: random}", "rules.0.split.method"),
        ("rules:\n  - id: a\n    match: {service: a}\n    owner: x\n    split: {method: even}", "not both"),
        ("rules:\n  - id: a\n    match: {service: a}\n    ownr: x", "ownr"),
        ("version: 7", "format version 7"),
    ],
)  # fmt: skip
def test_bad_rules_are_refused_naming_what_to_fix(text, message):
    with pytest.raises(RulesError, match="nothing was saved|not valid YAML|must be a mapping") as exc:
        parse_yaml(text)
    assert message in str(exc.value)


def test_keys_normalise_and_aliases_merge():
    assert normalise_key("  Cost   Center ") == "cost-center"
    assert normalise_key("cost_center") == "cost-center"
    assert normalise_key("Cost Center", separators=False) == "cost center"
    ruleset = parse_yaml(FULL)
    assert {k: ruleset.canonical_key(k) for k in ("cost center", "cost-center", "costcenter", "environment")} == {
        "cost center": "cost-center", "cost-center": "cost-center", "costcenter": "cost-center", "environment": "env"}  # fmt: skip
    assert ("contoso-prod", "rg-net-hub", "cost-center", "CC-9") in ruleset.parent_tags()
    assert ("contoso-shared", "", "team", "platform") in ruleset.parent_tags()


def test_merge_preview_shows_what_merges_first():
    preview = merge_preview(parse_yaml(FULL), {"costcenter": 50, "cost center": 10, "cost-center": 5, "team": 80})
    assert preview[0]["canonical_key"] == "cost-center" and preview[0]["merges"] and preview[0]["resources"] == 65
    assert preview[0]["keys_found"] == "'costcenter' (50), 'cost center' (10), 'cost-center' (5)"
    assert preview[1] == {"canonical_key": "team", "merges": False, "keys_found": "'team' (80)", "resources": 80}


def test_user_values_reach_the_sql_as_parameters_never_as_text():
    ruleset = parse_yaml(
        FULL.replace("payments-env", "quote").replace("owner: payments\n  - id: api", 'owner: "o\'x"\n  - id: api')
    )
    for dialect in (POSTGRES, SPARK):
        plan = build(ruleset, version=3, dialect=dialect)
        assert "o'x" in plan.params and "o'x" not in plan.allocation_sql
        assert "rg-(api|batch)" not in plan.allocation_sql
    assert "~*" in build(ruleset, version=1, dialect=POSTGRES).allocation_sql
    assert "RLIKE" in build(ruleset, version=1, dialect=SPARK).allocation_sql
    assert build(RuleSet(), version=0, dialect=POSTGRES).params == []


def test_printable_report_escapes_and_totals():
    lines = [
        {"subscription_id": "s", "resource_group": "rg", "service_name": "VM <x>", "resource_id": "/r/1", "rule": "team",
         "method": "direct", "share": 1.0, "actual_cost": Decimal(10), "amortized_cost": Decimal(10), "cost": Decimal(10)},
        {"subscription_id": "s", "resource_group": "", "service_name": "Firewall", "resource_id": "/r/2", "rule": "shared",
         "method": "split", "share": 0.25, "actual_cost": Decimal("2.5"), "amortized_cost": Decimal("2.5"),
         "cost": Decimal("2.5")},
    ]  # fmt: skip
    page = report.report_html(lines, owner="pay<ments>", month=dt.date(2026, 3, 1), currency="USD", metric="amortized",
                              rules_version=4, estate_total=Decimal(50))  # fmt: skip
    assert "pay&lt;ments&gt;" in page and "VM &lt;x&gt;" in page and "<script" not in page
    assert "12.50 USD" in page and "2.50 USD" in page and "25.0%" in page and "split 25.0%" in page
    assert "@page" in page and "rules version 4" in page
    text = report.report_csv(lines, owner="payments", month=dt.date(2026, 3, 1), currency="USD")
    assert text.splitlines()[0] == ",".join(report.CSV_COLUMNS)
    assert text.splitlines()[1].startswith("2026-03,payments,USD,s,rg,VM <x>,/r/1,team,direct,1.0,10,10")
