"""The allocation as one SQL text for both engines: Postgres (the mart, on save) and Spark SQL (gold, each run).

Both engines run the same statement over the same five relations, so the mart and gold cannot disagree on
a cent: the only dialect differences are type names and the case-insensitive regex operator.

- `alloc_costs`: one row per month ("YYYY-MM"), currency, subscription (id, name), resource group, service and
  resource, with actual and amortized cost (decimal(38,12), null where the source lacks the metric);
- `alloc_tags`: (resource_id, tag_key as silver folded it, tag_value, last_seen);
- `alloc_keymap`: raw tag key -> canonical key and its priority (0: the canonical spelling itself);
- `alloc_parents`: inherited tags (subscription, resource group or "", canonical key, value, level 1 = group,
  2 = subscription);
- `alloc_params`: one row of strings p0, p1, ...: every user-written value (owners, keys, regexes, rule
  ids) reaches the SQL as a column of it, never spliced into the text, so nothing needs escaping.

Allocation: the first rule (in order) whose match holds for a row decides it. An assign rule gives the row
to its owner (a tag rule without an owner: the tag's value, lower-cased). A split rule shares the row
among owners: fixed percentages, evenly, or in proportion to each owner's directly assigned amortized cost
of the same month and currency (owners with a positive basis only). Each share is the cost times its
fraction, kept exact by giving the rounding remainder to one share, so a split row's shares add up to the
row exactly. A row no rule matched, or a split without owners to share with (no basis that month), stays
unallocated with its reason: the unallocated share is a row, never a gap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from backend.allocation.rules import Rule, RuleSet

ROW_KEY = "charge_month, billing_currency, subscription_id, resource_group, service_name, resource_id"


@dataclass(frozen=True)
class Dialect:
    name: str
    string: str
    double: str
    decimal: str

    def regex(self, column: str, pattern: str) -> str:
        if self.name == "postgres":
            return f"{column} ~* {pattern}"
        return f"{column} RLIKE concat('(?i)', {pattern})"


POSTGRES = Dialect("postgres", "text", "double precision", "numeric(38,12)")
SPARK = Dialect("spark", "STRING", "DOUBLE", "DECIMAL(38,12)")


@dataclass
class Plan:
    """The statements and the rows of the small input relations built from the rule set."""

    allocation_sql: str
    coverage_sql: str
    params: list[str] = field(default_factory=list)
    parents: list[tuple[str, str, str, str, int]] = field(default_factory=list)

    def params_row(self) -> dict[str, str]:
        return {f"p{i}": v for i, v in enumerate(self.params)}


def keymap_rows(ruleset: RuleSet, raw_keys) -> list[dict]:
    """alloc_keymap rows: each raw key, its canonical key, and 0 when it already is the canonical spelling."""
    out = []
    for raw in sorted(set(raw_keys)):
        canonical = ruleset.canonical_key(raw)
        out.append({"raw_key": raw, "canonical_key": canonical, "priority": 0 if raw == canonical else 1})
    return out


def method_details(rule: Rule, version: int) -> str:
    """FOCUS AllocatedMethodDetails of a rule: JSON of what it matched and how it shared."""
    details: dict = {"rule": rule.id, "rules_version": version, "match": rule.match.describe()}
    if rule.split is None:
        details["method"] = "direct"
        details["owner"] = rule.owner or "the tag's value"
    else:
        details["method"] = rule.split.method
        if rule.split.method == "fixed":
            details["percentages"] = rule.split.percentages
        else:
            details["owners"] = list(rule.split.owners) or "every owner with directly assigned cost that month"
        if rule.split.method == "proportional":
            details["basis"] = "directly assigned amortized cost, same month and currency"
    return json.dumps(details, sort_keys=True)


def build(ruleset: RuleSet, *, version: int, dialect: Dialect) -> Plan:
    plan = Plan("", "")
    d = dialect

    def p(value: str) -> str:
        plan.params.append(str(value))
        return f"prm.p{len(plan.params) - 1}"

    def num(value: float) -> str:
        return f"CAST('{float(value)!r}' AS {d.double})"

    plan.parents = [(s, g, k, v, 1 if g else 2) for s, g, k, v in ruleset.parent_tags()]

    # One join per tag key the rules test.
    tag_keys: list[str] = []
    for rule in ruleset.rules:
        if rule.match.field == "tag":
            key = ruleset.canonical_key(rule.match.tag_parts()[0])
            if key not in tag_keys:
                tag_keys.append(key)
    tag_alias = {k: f"t{i}" for i, k in enumerate(tag_keys)}
    tag_joins = "".join(
        f"\n    LEFT JOIN eff {a} ON {a}.subscription_id = c.subscription_id AND {a}.resource_group = c.resource_group"
        f" AND {a}.resource_id = c.resource_id AND {a}.tag_key = {p(k)}"
        for k, a in tag_alias.items()
    )
    tag_cols = "".join(f", {a}.tag_value AS tag_{a}" for a in tag_alias.values())

    def condition(rule: Rule) -> str:
        m = rule.match
        if m.field == "tag":
            key, value = m.tag_parts()
            col = "tag_" + tag_alias[ruleset.canonical_key(key)]
            cond = f"{col} IS NOT NULL"
            return cond + (f" AND lower({col}) = lower({p(value)})" if value is not None else "")
        if m.field == "resource_group":
            return f"lower(resource_group) = lower({p(m.value)})"
        if m.field == "subscription":
            return (
                f"lower({p(m.value)}) IN (lower(subscription_id), lower(subscription_name),"
                " replace(lower(subscription_id), '/subscriptions/', ''))"
            )
        if m.field == "service":
            return f"lower(service_name) = lower({p(m.value)})"
        if m.field == "resource_id":
            return d.regex("resource_id", p(m.value))
        return "1 = 1"  # unallocated: whatever reaches it

    rules = list(ruleset.rules)
    match_case = "CASE " + "".join(f"WHEN {condition(r)} THEN {i} " for i, r in enumerate(rules)) + "ELSE -1 END"
    if not rules:
        match_case = "-1"
    assign = [(i, r) for i, r in enumerate(rules) if r.split is None]
    owner_case = f"CAST(NULL AS {d.string})"
    if assign:
        whens = []
        for i, r in assign:
            if r.owner is not None:
                whens.append(f"WHEN {i} THEN {p(r.owner.strip())}")
            else:
                col = "tag_" + tag_alias[ruleset.canonical_key(r.match.tag_parts()[0])]
                whens.append(f"WHEN {i} THEN lower(trim({col}))")
        owner_case = "CASE rule_idx " + " ".join(whens) + " END"
    rule_id_case = "CASE rule_idx " + "".join(f"WHEN {i} THEN {p(r.id)} " for i, r in enumerate(rules)) + "ELSE '' END"
    details_case = (
        "CASE rule_idx "
        + "".join(f"WHEN {i} THEN {p(method_details(r, version))} " for i, r in enumerate(rules))
        + "ELSE '' END"
    )
    if not rules:
        rule_id_case = details_case = "''"

    # Who shares each split rule's rows, with weights; fractions are taken per rule, month and currency.
    targets = []
    for i, r in enumerate(rules):
        if r.split is None:
            continue
        s = r.split
        months = f"(SELECT DISTINCT charge_month, billing_currency FROM m2 WHERE rule_idx = {i})"
        if s.method == "fixed" or (s.method == "even" and s.owners):
            weights = s.percentages if s.method == "fixed" else dict.fromkeys(s.owners, 1.0)
            for owner, weight in weights.items():
                targets.append(
                    f"SELECT {i} AS rule_idx, mo.charge_month, mo.billing_currency, {p(owner.strip())} AS owner,"
                    f" {num(weight)} AS weight FROM {months} mo CROSS JOIN alloc_params prm"
                )
        else:
            weight = num(1) if s.method == "even" else f"CAST(basis AS {d.double})"
            only = ""
            if s.owners:
                only = " AND owner IN (" + ", ".join(p(o.strip()) for o in s.owners) + ")"
            targets.append(
                f"SELECT {i} AS rule_idx, charge_month, billing_currency, owner, {weight} AS weight"
                f" FROM direct CROSS JOIN alloc_params prm WHERE basis > 0{only}"
            )
    if not targets:
        targets.append(
            f"SELECT -2 AS rule_idx, charge_month, billing_currency, owner, {num(1)} AS weight FROM direct WHERE 1 = 0"
        )

    base = """
WITH own AS (
    SELECT t.resource_id, km.canonical_key AS tag_key, t.tag_value,
           row_number() OVER (PARTITION BY t.resource_id, km.canonical_key
                              ORDER BY km.priority, t.last_seen DESC, km.raw_key, t.tag_value) AS rn
    FROM alloc_tags t JOIN alloc_keymap km ON km.raw_key = t.tag_key
    WHERE t.resource_id <> '' AND t.tag_value <> ''
), res AS (
    SELECT DISTINCT subscription_id, subscription_name, resource_group, resource_id FROM alloc_costs
), eff_all AS (
    SELECT r.subscription_id, r.resource_group, r.resource_id, o.tag_key, o.tag_value, 0 AS lvl
    FROM res r JOIN own o ON o.resource_id = r.resource_id AND o.rn = 1
    UNION ALL
    SELECT r.subscription_id, r.resource_group, r.resource_id, pa.tag_key, pa.tag_value, pa.lvl
    FROM res r JOIN alloc_parents pa
      ON (pa.subscription = '' OR lower(pa.subscription) IN (lower(r.subscription_id), lower(r.subscription_name),
                                                             replace(lower(r.subscription_id), '/subscriptions/', '')))
     AND (pa.resource_group = '' OR lower(pa.resource_group) = lower(r.resource_group))
), eff AS (
    SELECT subscription_id, resource_group, resource_id, tag_key, tag_value FROM (
        SELECT e.subscription_id, e.resource_group, e.resource_id, e.tag_key, e.tag_value,
               row_number() OVER (PARTITION BY e.subscription_id, e.resource_group, e.resource_id, e.tag_key
                                  ORDER BY e.lvl) AS rn
        FROM eff_all e) x
    WHERE rn = 1
)"""
    plan.allocation_sql = (
        base
        + f""", cr AS (
    SELECT c.charge_month, c.billing_currency, c.subscription_id, c.subscription_name, c.resource_group,
           c.service_name, c.resource_id, c.actual_cost, c.amortized_cost{tag_cols}
    FROM alloc_costs c CROSS JOIN alloc_params prm{tag_joins}
), m AS (
    SELECT cr.*, {match_case} AS rule_idx FROM cr CROSS JOIN alloc_params prm
), m2 AS (
    SELECT m.*, {owner_case} AS direct_owner, {rule_id_case} AS rule_id, {details_case} AS details
    FROM m CROSS JOIN alloc_params prm
), direct AS (
    SELECT charge_month, billing_currency, direct_owner AS owner,
           sum(coalesce(amortized_cost, actual_cost)) AS basis
    FROM m2 WHERE direct_owner IS NOT NULL
    GROUP BY charge_month, billing_currency, direct_owner
), targets AS (
    {" UNION ALL ".join(targets)}
), tw AS (
    SELECT rule_idx, charge_month, billing_currency, owner,
           weight / sum(weight) OVER (PARTITION BY rule_idx, charge_month, billing_currency) AS fraction
    FROM targets WHERE weight > 0
), shared AS (
    SELECT m2.*, tw.owner AS split_owner, tw.fraction,
           CAST(CAST(m2.actual_cost AS {d.double}) * tw.fraction AS {d.decimal}) AS a_raw,
           CAST(CAST(m2.amortized_cost AS {d.double}) * tw.fraction AS {d.decimal}) AS e_raw,
           row_number() OVER (PARTITION BY {", ".join("m2." + k.strip() for k in ROW_KEY.split(","))}
                              ORDER BY tw.owner) AS share_rn
    FROM m2 JOIN tw ON tw.rule_idx = m2.rule_idx AND tw.charge_month = m2.charge_month
                   AND tw.billing_currency = m2.billing_currency
    WHERE m2.direct_owner IS NULL
), shared_exact AS (
    SELECT s.*,
           CASE WHEN share_rn = 1 THEN actual_cost - (sum(a_raw) OVER (PARTITION BY {ROW_KEY}) - a_raw)
                ELSE a_raw END AS actual_share,
           CASE WHEN share_rn = 1 THEN amortized_cost - (sum(e_raw) OVER (PARTITION BY {ROW_KEY}) - e_raw)
                ELSE e_raw END AS amortized_share
    FROM shared s
), shared_keys AS (
    SELECT DISTINCT rule_idx, charge_month, billing_currency FROM tw
)
SELECT charge_month, billing_currency, direct_owner AS owner, rule_id AS allocated_method_id, 'direct' AS method,
       {num(1)} AS share, subscription_id, resource_group, service_name, resource_id,
       CAST(actual_cost AS {d.decimal}) AS actual_cost, CAST(amortized_cost AS {d.decimal}) AS amortized_cost,
       details AS allocated_method_details
FROM m2 WHERE direct_owner IS NOT NULL
UNION ALL
SELECT charge_month, billing_currency, split_owner, rule_id, 'split', fraction,
       subscription_id, resource_group, service_name, resource_id,
       CAST(actual_share AS {d.decimal}), CAST(amortized_share AS {d.decimal}), details
FROM shared_exact
UNION ALL
SELECT m2.charge_month, m2.billing_currency, CAST(NULL AS {d.string}), m2.rule_id,
       CASE WHEN m2.rule_idx = -1 THEN 'unmatched' ELSE 'no_basis' END, {num(1)},
       m2.subscription_id, m2.resource_group, m2.service_name, m2.resource_id,
       CAST(m2.actual_cost AS {d.decimal}), CAST(m2.amortized_cost AS {d.decimal}), m2.details
FROM m2 LEFT JOIN shared_keys k ON k.rule_idx = m2.rule_idx AND k.charge_month = m2.charge_month
                               AND k.billing_currency = m2.billing_currency
WHERE m2.direct_owner IS NULL AND k.rule_idx IS NULL
"""
    )
    # Untagged = the month's total minus the cost of rows the key tags, so no key is crossed with every cost
    # row (costs x keys with a join per pair took over 10 minutes on a 5M-row mart). A key with no untagged
    # row with a cost is null, as a sum over no rows is.
    plan.coverage_sql = (
        base
        + f""", keys AS (
    SELECT DISTINCT tag_key FROM eff
), totals AS (
    SELECT charge_month, billing_currency, sum(coalesce(amortized_cost, actual_cost)) AS total_cost,
           count(coalesce(amortized_cost, actual_cost)) AS costed
    FROM alloc_costs GROUP BY charge_month, billing_currency
), tagged AS (
    SELECT c.charge_month, c.billing_currency, e.tag_key, sum(coalesce(c.amortized_cost, c.actual_cost)) AS cost,
           count(coalesce(c.amortized_cost, c.actual_cost)) AS costed
    FROM alloc_costs c JOIN eff e ON e.subscription_id = c.subscription_id AND e.resource_group = c.resource_group
                               AND e.resource_id = c.resource_id
    GROUP BY c.charge_month, c.billing_currency, e.tag_key
)
SELECT t.charge_month, t.billing_currency, k.tag_key, CAST(t.total_cost AS {d.decimal}) AS total_cost,
       CAST(CASE WHEN t.costed > coalesce(g.costed, 0) THEN t.total_cost - coalesce(g.cost, 0) END AS {d.decimal})
           AS untagged_cost
FROM totals t CROSS JOIN keys k
LEFT JOIN tagged g ON g.charge_month = t.charge_month AND g.billing_currency = t.billing_currency
                  AND g.tag_key = k.tag_key
"""
    )
    return plan
