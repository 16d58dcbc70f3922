"""Waste and savings over the mart: list vs contracted vs effective cost, commitment utilisation, and waste hints.

Every function takes an Engine on the read-only role and a currency (costs are never summed across
currencies). Money is exact (Decimal); None means "not available": the loaded sources do not carry
that column (Azure exports have no ContractedCost and no CommitmentDiscountStatus), never 0.

Savings (FinOps Foundation definitions, on FOCUS columns):
- negotiated savings = ListCost - ContractedCost (the price sheet's discount),
- commitment savings = ContractedCost - EffectiveCost (what reservations / savings plans saved, net of
  their unused part, which is in EffectiveCost),
- effective savings rate = (ListCost - EffectiveCost) / ListCost,
  (commitment purchases left out: their payment is in the covered usage's EffectiveCost already),
- commitment utilisation = used / (used + unused) effective cost of commitment-covered rows.
Each is computed over the rows that carry every column it needs; `covered` says what share of the
period's effective cost that is, so a partial figure is never passed off as the estate's.

Waste hints (cost basis: amortized cost where known, else actual, as the top movers):
- resources whose cost started after a gap or stopped before one (gold resource_cost_changes),
- cost without usage: Usage rows of a resource and meter whose month has cost but zero quantity,
- orphan-looking resources, by the meter patterns of real Azure cost data: ORPHAN_RULES below, the one
  place these heuristics live.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

PORTAL = "https://portal.azure.com/#@/resource"
_COST = "coalesce({a}.amortized_cost, {a}.actual_cost)"


def resource_link(resource_id: str) -> str | None:
    """The Azure portal page of an ARM resource id; None for ids that are not Azure's (shown as plain text)."""
    rid = (resource_id or "").strip()
    if rid.lower().startswith("/subscriptions/") and "/providers/" in rid.lower():
        return PORTAL + rid
    return None


def _ratio(num: Decimal | None, den: Decimal | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num / den)


# --- savings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Savings:
    """List vs contracted vs effective cost of a period and the savings between them (None = not available)."""

    currency: str
    effective_cost: Decimal | None  # amortized cost of the period, every row
    # Over rows carrying list and effective cost:
    list_cost: Decimal | None
    effective_savings_rate: float | None
    # Over rows carrying list, contracted and effective cost:
    contracted_list_cost: Decimal | None
    contracted_cost: Decimal | None
    contracted_effective_cost: Decimal | None
    negotiated_savings: Decimal | None
    commitment_savings: Decimal | None
    # Commitment-covered effective cost, by CommitmentDiscountStatus:
    commitment_used: Decimal | None
    commitment_unused: Decimal | None
    commitment_utilisation: float | None
    list_covered: float | None  # share of effective cost behind the list-based figures
    contracted_covered: float | None  # share of effective cost behind negotiated / commitment savings
    effective_savings: Decimal | None  # list minus effective cost over the rows the rate uses


@dataclass(frozen=True)
class SavingsMonth:
    month: dt.date
    list_cost: Decimal | None
    contracted_cost: Decimal | None
    effective_cost: Decimal | None
    negotiated_savings: Decimal | None
    commitment_savings: Decimal | None
    effective_savings_rate: float | None
    commitment_used: Decimal | None
    commitment_unused: Decimal | None
    commitment_utilisation: float | None


@dataclass(frozen=True)
class Commitment:
    """Utilisation of one kind of commitment (pricing model Reservation / SavingsPlan)."""

    pricing_model: str
    used: Decimal | None
    unused: Decimal | None
    utilisation: float | None


# A commitment's purchase (its payment: list = contracted = billed, effective 0) is already in the covered
# usage's effective cost, amortized; counting it too would add the payment to list and contracted cost and
# pass it off as savings. Savings compare usage (and unused commitment) only, as FOCUS's savings use cases do.
_NOT_PURCHASE = "NOT (cc.charge_category = 'Purchase' AND pm.pricing_model IN ('Reservation', 'SavingsPlan'))"
_HAS_LIST = f"a.list_cost IS NOT NULL AND a.amortized_cost IS NOT NULL AND {_NOT_PURCHASE}"
_HAS_ALL = _HAS_LIST + " AND a.contracted_cost IS NOT NULL"
_SAVINGS_SELECT = f"""
    sum(a.amortized_cost) AS effective,
    sum(a.list_cost) FILTER (WHERE {_HAS_LIST}) AS list_l,
    sum(a.amortized_cost) FILTER (WHERE {_HAS_LIST}) AS effective_l,
    sum(a.list_cost) FILTER (WHERE {_HAS_ALL}) AS list_c,
    sum(a.contracted_cost) FILTER (WHERE {_HAS_ALL}) AS contracted_c,
    sum(a.amortized_cost) FILTER (WHERE {_HAS_ALL}) AS effective_c,
    sum(a.commitment_used_cost) AS used,
    sum(a.commitment_unused_cost) AS unused"""
_CURRENCY_JOIN = "JOIN mart.dim_currency cur ON cur.currency_key = a.currency_key"
_SAVINGS_JOINS = f"""{_CURRENCY_JOIN}
    JOIN mart.dim_charge_category cc ON cc.charge_category_key = a.charge_category_key
    JOIN mart.dim_pricing_model pm ON pm.pricing_model_key = a.pricing_model_key"""


def _utilisation(used: Decimal | None, unused: Decimal | None) -> float | None:
    if used is None or unused is None:
        return None
    return _ratio(used, used + unused)


def _minus(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None else a - b


def savings_summary(engine: sa.Engine, *, start: dt.date, end: dt.date, currency: str) -> Savings:
    """Savings of the inclusive charge-day range [start, end] in `currency`."""
    sql = f"""SELECT {_SAVINGS_SELECT} FROM mart.agg_cost_daily a {_SAVINGS_JOINS}
              WHERE a.charge_date BETWEEN :start AND :end AND cur.currency_code = :currency"""
    with engine.connect() as conn:
        r = conn.execute(sa.text(sql), {"start": start, "end": end, "currency": currency}).mappings().one()
    return Savings(
        currency=currency,
        effective_cost=r["effective"],
        list_cost=r["list_l"],
        effective_savings_rate=_ratio(_minus(r["list_l"], r["effective_l"]), r["list_l"]),
        contracted_list_cost=r["list_c"],
        contracted_cost=r["contracted_c"],
        contracted_effective_cost=r["effective_c"],
        negotiated_savings=_minus(r["list_c"], r["contracted_c"]),
        commitment_savings=_minus(r["contracted_c"], r["effective_c"]),
        commitment_used=r["used"],
        commitment_unused=r["unused"],
        commitment_utilisation=_utilisation(r["used"], r["unused"]),
        list_covered=_ratio(r["effective_l"], r["effective"]) if r["list_l"] is not None else None,
        contracted_covered=_ratio(r["effective_c"], r["effective"]) if r["contracted_c"] is not None else None,
        effective_savings=_minus(r["list_l"], r["effective_l"]),
    )


def savings_by_month(engine: sa.Engine, *, start: dt.date, end: dt.date, currency: str) -> list[SavingsMonth]:
    """Monthly list / contracted / effective cost and savings over [start, end] (months of the charge days)."""
    sql = f"""SELECT date_trunc('month', a.charge_date)::date AS month, {_SAVINGS_SELECT}
              FROM mart.agg_cost_daily a {_SAVINGS_JOINS}
              WHERE a.charge_date BETWEEN :start AND :end AND cur.currency_code = :currency
              GROUP BY 1 ORDER BY 1"""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"start": start, "end": end, "currency": currency}).mappings().all()
    return [
        SavingsMonth(
            month=r["month"],
            list_cost=r["list_l"],
            contracted_cost=r["contracted_c"],
            effective_cost=r["effective"],
            negotiated_savings=_minus(r["list_c"], r["contracted_c"]),
            commitment_savings=_minus(r["contracted_c"], r["effective_c"]),
            effective_savings_rate=_ratio(_minus(r["list_l"], r["effective_l"]), r["list_l"]),
            commitment_used=r["used"],
            commitment_unused=r["unused"],
            commitment_utilisation=_utilisation(r["used"], r["unused"]),
        )
        for r in rows
    ]


def commitments(engine: sa.Engine, *, start: dt.date, end: dt.date, currency: str) -> list[Commitment]:
    """Used and unused effective cost per commitment kind (pricing model) over [start, end]; kinds with none omitted."""
    sql = f"""SELECT pm.label AS pricing_model, sum(a.commitment_used_cost) AS used,
                     sum(a.commitment_unused_cost) AS unused
              FROM mart.agg_cost_daily a {_CURRENCY_JOIN}
              JOIN mart.dim_pricing_model pm ON pm.pricing_model_key = a.pricing_model_key
              WHERE a.charge_date BETWEEN :start AND :end AND cur.currency_code = :currency
              GROUP BY 1
              HAVING coalesce(sum(a.commitment_used_cost), 0) <> 0 OR coalesce(sum(a.commitment_unused_cost), 0) <> 0
              ORDER BY 1"""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"start": start, "end": end, "currency": currency}).mappings().all()
    return [Commitment(r["pricing_model"], r["used"], r["unused"], _utilisation(r["used"], r["unused"])) for r in rows]


# --- waste ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OrphanRule:
    """One orphan-looking pattern. Patterns are ILIKE patterns over the mart's (lower-cased) resource ids
    and meter names; categories are Azure MeterCategory values, compared case-insensitively."""

    kind: str
    label: str
    why: str
    meter_categories: tuple[str, ...]  # the resource's cost is on these meter categories ...
    meter_names: tuple[str, ...]  # ... and meter names
    resource_ids: tuple[str, ...] = ()  # or its id is of these types (either signal counts)
    # In use when, in the same month, its resource group has cost on these meter categories (disk, IP) ...
    consumers: tuple[str, ...] = ()
    # ... or (stopped VM) when the resource itself has cost on these meter categories on the same day.
    own_compute: tuple[str, ...] = ()


# The heuristics, in one place. Azure bills a managed disk on the disk's own resource (MeterCategory
# "Storage", MeterName "P10 LRS Disk" / "E10 LRS Disk" / "S4 LRS Disk"), whether or not a VM uses it; a
# public IP on the IP's resource ("Virtual Network", "Standard IPv4 Static Public IP"); a deallocated VM
# stops its compute hours ("Virtual Machines") while disks and IPs billed on the VM keep costing.
_VM_ID = "%/providers/microsoft.compute/virtualmachines/%"
ORPHAN_RULES: tuple[OrphanRule, ...] = (
    OrphanRule(
        kind="unattached_disk",
        label="Unattached managed disk",
        why="a managed disk billed in a month when no VM in its resource group ran (no Virtual Machines cost)",
        meter_categories=("storage",),
        meter_names=("%disk%",),
        resource_ids=("%/providers/microsoft.compute/disks/%",),
        consumers=("virtual machines", "azure kubernetes service", "virtual machine scale sets"),
    ),
    OrphanRule(
        kind="idle_public_ip",
        label="Idle public IP address",
        why="a public IP billed in a month when nothing that uses one (VM, load balancer, gateway, firewall) "
        "had cost in its resource group",
        meter_categories=("virtual network",),
        meter_names=("%public ip%", "%ip address%"),
        resource_ids=("%/providers/microsoft.network/publicipaddresses/%",),
        consumers=(
            "virtual machines",
            "load balancer",
            "application gateway",
            "vpn gateway",
            "azure firewall",
            "nat gateway",
            "azure kubernetes service",
        ),
    ),
    OrphanRule(
        kind="stopped_vm",
        label="Stopped but billed VM",
        why="a VM with disk or IP cost on days without compute hours (deallocated, its storage still billed)",
        meter_categories=("storage", "virtual network"),
        meter_names=("%disk%", "%public ip%", "%ip address%"),
        resource_ids=(_VM_ID,),
        own_compute=("virtual machines",),
    ),
)
RULES_BY_KIND = {r.kind: r for r in ORPHAN_RULES}


@dataclass(frozen=True)
class CostChange:
    event: str  # "started" | "stopped"
    event_date: dt.date
    resource_id: str
    resource_name: str
    subscription_id: str
    resource_group: str
    service_name: str
    daily_cost: Decimal | None  # cost on the event day
    monthly_cost: Decimal | None  # the resource's cost in the event's month
    link: str | None


@dataclass(frozen=True)
class ZeroUsage:
    resource_id: str
    resource_name: str
    resource_group: str
    meter_category: str
    meter_name: str
    monthly_cost: Decimal
    link: str | None


@dataclass(frozen=True)
class Orphan:
    kind: str
    label: str
    resource_id: str
    resource_name: str
    resource_group: str
    meters: str  # the meters that looked orphaned, comma-separated
    days: int | None  # stopped VM: days billed without compute; None for the monthly rules (disks, IPs)
    monthly_cost: Decimal
    why: str
    link: str | None


def _month_start(month: dt.date) -> dt.date:
    return month.replace(day=1)


def _next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def cost_changes(engine: sa.Engine, *, month: dt.date, currency: str, limit: int = 200) -> list[CostChange]:
    """Resources whose cost started or stopped in `month`, largest monthly cost first."""
    sql = f"""
        WITH monthly AS (
            SELECT r.resource_id, sum({_COST.format(a="a")}) AS cost
            FROM mart.agg_cost_resource_monthly a
            JOIN mart.dim_resource r ON r.resource_key = a.resource_key
            {_CURRENCY_JOIN}
            WHERE a.charge_month = :month AND cur.currency_code = :currency
            GROUP BY 1)
        SELECT c.event, c.event_date, c.resource_id, coalesce(nullif(r.resource_name, ''), c.resource_id) AS name,
               c.subscription_id, c.resource_group, c.service_name, c.daily_cost, m.cost AS monthly_cost
        FROM mart.resource_cost_changes c
        LEFT JOIN mart.dim_resource r ON r.resource_id = c.resource_id
        LEFT JOIN monthly m ON m.resource_id = c.resource_id
        WHERE c.charge_month = :month AND c.currency_code = :currency
        ORDER BY m.cost DESC NULLS LAST, c.event_date, c.resource_id, c.event
        LIMIT :limit"""
    params = {"month": _month_start(month), "currency": currency, "limit": limit}
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).mappings().all()
    return [
        CostChange(
            event=r["event"],
            event_date=r["event_date"],
            resource_id=r["resource_id"],
            resource_name=r["name"],
            subscription_id=r["subscription_id"],
            resource_group=r["resource_group"],
            service_name=r["service_name"],
            daily_cost=r["daily_cost"],
            monthly_cost=r["monthly_cost"],
            link=resource_link(r["resource_id"]),
        )
        for r in rows
    ]


def zero_usage(engine: sa.Engine, *, month: dt.date, currency: str, limit: int = 200) -> list[ZeroUsage]:
    """Usage cost with zero quantity in `month`, per resource and meter (quantity known on every row)."""
    sql = f"""
        SELECT r.resource_id, coalesce(nullif(r.resource_name, ''), r.resource_id) AS name,
               rg.resource_group, m.meter_category, m.meter_name, sum({_COST.format(a="a")}) AS cost
        FROM mart.agg_cost_resource_monthly a
        JOIN mart.dim_resource r ON r.resource_key = a.resource_key
        JOIN mart.dim_meter m ON m.meter_key = a.meter_key
        JOIN mart.dim_resource_group rg ON rg.resource_group_key = a.resource_group_key
        JOIN mart.dim_charge_category cc ON cc.charge_category_key = a.charge_category_key
        {_CURRENCY_JOIN}
        WHERE a.charge_month = :month AND cur.currency_code = :currency AND cc.charge_category = 'Usage'
          AND a.resource_key <> 0
        GROUP BY 1, 2, 3, 4, 5
        HAVING count(a.quantity) = count(*) AND sum(a.quantity) = 0 AND sum({_COST.format(a="a")}) > 0
        ORDER BY cost DESC, 1, 5
        LIMIT :limit"""
    params = {"month": _month_start(month), "currency": currency, "limit": limit}
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).mappings().all()
    return [
        ZeroUsage(
            r["resource_id"],
            r["name"],
            r["resource_group"],
            r["meter_category"],
            r["meter_name"],
            r["cost"],
            resource_link(r["resource_id"]),
        )  # fmt: skip
        for r in rows
    ]


def _any(column: str, patterns: tuple[str, ...], params: dict, prefix: str) -> str:
    """`column ILIKE ANY` of bound patterns (or FALSE when there are none)."""
    if not patterns:
        return "false"
    name = f"{prefix}_{len(params)}"
    params[name] = list(patterns)
    return f"{column} ILIKE ANY (:{name})"


def _orphan_sql(rule: OrphanRule, params: dict) -> str:
    """One rule's statement. The patterns are matched once over the small dimensions (meters, resources)
    and the cost rows are then filtered by key: matching them per cost row cost 1.5 s on a 5M-row mart."""
    p = rule.kind
    params[f"{p}_cat"] = list(rule.meter_categories)
    hit_meters = f"""SELECT meter_key FROM mart.dim_meter m
            WHERE lower(m.meter_category) = ANY (:{p}_cat) AND {_any("m.meter_name", rule.meter_names, params, p + "_mn")}"""
    typed = f"SELECT resource_key FROM mart.dim_resource r WHERE {_any('r.resource_id', rule.resource_ids, params, p + '_id')}"
    currency = "SELECT currency_key FROM mart.dim_currency WHERE currency_code = :currency"
    names = """JOIN mart.dim_resource r ON r.resource_key = h.resource_key
        JOIN mart.dim_meter m ON m.meter_key = h.meter_key
        JOIN mart.dim_resource_group rg ON rg.resource_group_key = h.resource_group_key"""
    if rule.own_compute:
        # Per day from the fact (the month's partition, the typed resources only): the resource's days with
        # disk/IP cost and no compute cost. A day's cost counts whole (what the stopped VM cost that day).
        params[f"{p}_own"] = list(rule.own_compute)
        return f"""
        WITH hits AS (SELECT meter_key FROM ({hit_meters}) x),
        rows AS MATERIALIZED (
            SELECT f.resource_key, f.resource_group_key, f.charge_date, f.meter_key,
                   hm.meter_key IS NOT NULL AS hit, {_COST.format(a="f")} AS cost
            FROM mart.fact_cost_daily f LEFT JOIN hits hm ON hm.meter_key = f.meter_key
            WHERE f.charge_date >= :month AND f.charge_date < :next_month
              AND f.currency_key IN ({currency}) AND f.resource_key IN ({typed})),
        computed AS (
            SELECT DISTINCT c.resource_key, c.charge_date FROM rows c
            WHERE c.meter_key IN (SELECT meter_key FROM mart.dim_meter WHERE lower(meter_category) = ANY (:{p}_own)))
        SELECT '{p}' AS kind, r.resource_id, r.resource_name, rg.resource_group,
               string_agg(DISTINCT m.meter_name, ', ' ORDER BY m.meter_name) FILTER (WHERE h.hit) AS meters,
               count(DISTINCT h.charge_date) AS days, sum(h.cost) AS cost
        FROM rows h {names}
        WHERE NOT EXISTS (
            SELECT 1 FROM computed c WHERE c.resource_key = h.resource_key AND c.charge_date = h.charge_date)
        GROUP BY 1, 2, 3, 4
        HAVING bool_or(h.hit) AND sum(h.cost) > 0"""
    # Disks and IPs per month: the resource's rows on the orphan meters (or all its rows when its id is of
    # the type), in resource groups where nothing that would use it had cost that month. VMs are the rule above.
    params[f"{p}_use"] = list(rule.consumers)
    return f"""
        WITH busy AS (
            SELECT DISTINCT o.resource_group_key FROM mart.agg_cost_resource_monthly o
            WHERE o.charge_month = :month AND coalesce(o.amortized_cost, o.actual_cost) <> 0
              AND o.meter_key IN (SELECT meter_key FROM mart.dim_meter WHERE lower(meter_category) = ANY (:{p}_use))),
        h AS (
            SELECT a.resource_key, a.resource_group_key, a.meter_key, sum({_COST.format(a="a")}) AS cost
            FROM mart.agg_cost_resource_monthly a
            WHERE a.charge_month = :month AND a.currency_key IN ({currency}) AND a.resource_key <> 0
              AND (a.meter_key IN ({hit_meters}) OR a.resource_key IN ({typed}))
              AND a.resource_key NOT IN (SELECT resource_key FROM mart.dim_resource WHERE resource_id ILIKE '{_VM_ID}')
              AND a.resource_group_key NOT IN (SELECT resource_group_key FROM busy)
            GROUP BY 1, 2, 3)
        SELECT '{p}' AS kind, r.resource_id, r.resource_name, rg.resource_group,
               string_agg(DISTINCT m.meter_name, ', ' ORDER BY m.meter_name) AS meters,
               NULL::bigint AS days, sum(h.cost) AS cost
        FROM h {names}
        GROUP BY 1, 2, 3, 4
        HAVING sum(h.cost) > 0"""


def orphans(
    engine: sa.Engine, *, month: dt.date, currency: str, kinds: tuple[str, ...] | None = None, limit: int = 200
) -> list[Orphan]:
    """Orphan-looking resources of `month` by ORPHAN_RULES (all kinds, or `kinds`), largest monthly cost first.

    Unattached disks and idle IPs: their cost in the month. Stopped VMs: the cost of the days without compute,
    and how many days that was (disks and IPs are judged per month: days None).
    """
    rules = [r for r in ORPHAN_RULES if kinds is None or r.kind in kinds]
    if not rules:
        return []
    month = _month_start(month)
    params: dict = {"month": month, "next_month": _next_month(month), "currency": currency, "limit": limit}
    parts = [_orphan_sql(rule, params) for rule in rules]
    sql = " UNION ALL ".join(f"({part})" for part in parts) + " ORDER BY cost DESC, kind, resource_id LIMIT :limit"
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).mappings().all()
    out = []
    for r in rows:
        rule = RULES_BY_KIND[r["kind"]]
        out.append(
            Orphan(
                kind=rule.kind,
                label=rule.label,
                resource_id=r["resource_id"],
                resource_name=r["resource_name"] or r["resource_id"],
                resource_group=r["resource_group"],
                meters=r["meters"] or "",
                days=None if r["days"] is None else int(r["days"]),
                monthly_cost=r["cost"],
                why=rule.why,
                link=resource_link(r["resource_id"]),
            )
        )
    return out


def currencies(engine: sa.Engine, *, start: dt.date, end: dt.date) -> list[str]:
    """Billing currencies with cost in [start, end] (savings and waste are per currency)."""
    sql = f"""SELECT DISTINCT cur.currency_code FROM mart.agg_cost_daily a {_CURRENCY_JOIN}
              WHERE a.charge_date BETWEEN :start AND :end AND cur.currency_code <> '' ORDER BY 1"""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), {"start": start, "end": end}).scalars())


def waste_months(engine: sa.Engine) -> list[dt.date]:
    """Months the mart holds (newest first), for the page's month picker."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT charge_month FROM mart.agg_cost_monthly ORDER BY 1 DESC"))
        return [r[0] for r in rows]
