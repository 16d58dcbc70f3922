"""Allocation in the mart: rule set versions (saved by editors, audited), the recompute on save, and showback reads.

Where allocation is computed, and why: a saved rule set takes effect at once by running the allocation SQL
(`backend.allocation.sql`) in Postgres over the mart's monthly resource aggregate and tag bridge, in the same
transaction as the new version and its audit row. No pipeline run and no Spark session are needed for an
edit (the page's process has none of its own, and an editor may not start runs). The pipeline's
`allocation` step, after `mart`, recomputes the mart the same way (new cost, same rules) and writes gold's
`cost_allocation` through Spark with the very same SQL text, so lake and mart agree to the cent.

Conservation: every recompute checks, per month and currency, that the allocated rows (owners plus the
explicit unallocated share) add up exactly to the cost they came from, and rolls back if not.
Reads take the reader engine; writes the owner engine. Money is Decimal, per currency, never summed across.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from backend.allocation import sql as alloc_sql
from backend.allocation.rules import RuleSet, export_yaml, from_dict, parse_yaml, to_dict
from backend.auth import Principal, Role, require
from backend.mart import locks
from backend.mart.audit import record

log = logging.getLogger(__name__)

# Recomputes (a save, the pipeline step) replace the same tables: one at a time.
ALLOCATION_LOCK_KEY = locks.ALLOCATION
DEMO_RULES = Path(__file__).resolve().parent.parent / "allocation" / "demo_rules.yaml"
UNALLOCATED = "(unallocated)"
_COST = {"amortized": "coalesce(amortized_cost, actual_cost)", "actual": "actual_cost"}


class ConservationError(RuntimeError):
    """Allocated cost does not add up to the source cost (a bug: the recompute is rolled back)."""


@dataclass(frozen=True)
class RulesVersion:
    version: int
    ruleset: RuleSet
    rules_yaml: str
    sha256: str
    comment: str
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Recompute:
    rules_version: int | None
    rows: int
    months: int
    unallocated_share: float | None  # over every month, amortized basis, of the first currency by cost


# --- versions ---------------------------------------------------------------------------------------
def _version_from_row(row) -> RulesVersion:
    return RulesVersion(
        version=row.version,
        ruleset=from_dict(row.rules),
        rules_yaml=row.rules_yaml,
        sha256=row.sha256,
        comment=row.comment,
        created_by=row.created_by,
        created_at=row.created_at,
    )


_VERSION_COLS = "version, rules, rules_yaml, sha256, comment, created_by, created_at"


def current_rules(engine: sa.Engine | sa.Connection) -> RulesVersion | None:
    """The rule set in force (the highest version), None before the first save."""
    sql = sa.text(f"SELECT {_VERSION_COLS} FROM mart.allocation_rulesets ORDER BY version DESC LIMIT 1")
    if isinstance(engine, sa.Connection):
        row = engine.execute(sql).first()
    else:
        with engine.connect() as conn:
            row = conn.execute(sql).first()
    return None if row is None else _version_from_row(row)


def get_version(engine: sa.Engine, version: int) -> RulesVersion | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {_VERSION_COLS} FROM mart.allocation_rulesets WHERE version = :v"), {"v": version}
        ).first()
    return None if row is None else _version_from_row(row)


def list_versions(engine: sa.Engine, *, limit: int = 50) -> list[dict]:
    sql = """SELECT version, created_at, created_by, comment, sha256,
                    jsonb_array_length(coalesce(rules->'rules', '[]'::jsonb)) AS rules
             FROM mart.allocation_rulesets ORDER BY version DESC LIMIT :limit"""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), {"limit": limit}).mappings()]


def save_rules(engine: sa.Engine, ruleset: RuleSet | str, *, actor: Principal, comment: str = "") -> Recompute:
    """Save `ruleset` (a RuleSet or YAML text) as a new version and apply it to the mart, in one transaction.

    Needs the editor role; audited with the actor. A RulesError (bad YAML or rules) saves nothing. Saving the
    same rules as the version in force adds no version (the recompute still runs, e.g. after new cost)."""
    require(actor, Role.editor, "Changing the allocation rules")
    if isinstance(ruleset, str):
        ruleset = parse_yaml(ruleset)
    text = export_yaml(ruleset)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with engine.begin() as conn:
        locks.in_transaction(conn, ALLOCATION_LOCK_KEY)
        current = current_rules(conn)
        if current is not None and current.sha256 == digest:
            version = current.version
        else:
            version = conn.execute(
                sa.text(
                    "INSERT INTO mart.allocation_rulesets (rules, rules_yaml, sha256, comment, created_by)"
                    " VALUES (CAST(:rules AS jsonb), :yaml, :sha, :comment, :who) RETURNING version"
                ),
                {"rules": json.dumps(to_dict(ruleset)), "yaml": text, "sha": digest, "comment": comment.strip(),
                 "who": actor.who},
            ).scalar_one()  # fmt: skip
            record(
                conn,
                actor,
                "allocation.rules.save",
                f"rules version {version}",
                {"rules": len(ruleset.rules), "aliases": len(ruleset.tags.aliases), "sha256": digest[:16],
                 "comment": comment.strip()[:200]},
            )  # fmt: skip
        result = _recompute(conn, ruleset, version=version, run_id=None)
    log.info("allocation rules version %s saved by %s and applied: %s", version, actor.who, result)
    return result


def recompute(engine: sa.Engine, *, run_id: str | None = None) -> Recompute:
    """Apply the rule set in force to what the mart holds now (the pipeline step, after each load)."""
    with engine.begin() as conn:
        locks.in_transaction(conn, ALLOCATION_LOCK_KEY)
        current = current_rules(conn)
        ruleset, version = (RuleSet(), None) if current is None else (current.ruleset, current.version)
        return _recompute(conn, ruleset, version=version, run_id=run_id)


def seed_demo_rules(engine: sa.Engine) -> int | None:
    """The demo's rules (backend/allocation/demo_rules.yaml), once, on a demo install that has no rules yet."""
    from backend.auth import system_principal
    from backend.mart.demo import demo_loaded

    with engine.connect() as conn:
        if not demo_loaded(conn) or conn.execute(sa.text("SELECT count(*) FROM mart.allocation_rulesets")).scalar():
            return None
    result = save_rules(
        engine, DEMO_RULES.read_text(), actor=system_principal("demo"), comment="the demo estate's default rules"
    )
    return result.rules_version


def forget_demo_rules(engine: sa.Engine) -> int:
    """Once the demo estate is gone: drop the demo's seeded rules unless a user has saved a version since (then
    they are the user's rules). Returns how many versions went; the next recompute applies what is left."""
    from backend.auth import system_principal
    from backend.mart.demo import demo_loaded

    demo = system_principal("demo")
    with engine.begin() as conn:
        if demo_loaded(conn):
            return 0
        locks.in_transaction(conn, ALLOCATION_LOCK_KEY)
        gone = conn.execute(
            sa.text(
                """DELETE FROM mart.allocation_rulesets WHERE created_by = :demo
                   AND NOT EXISTS (SELECT 1 FROM mart.allocation_rulesets WHERE created_by <> :demo)"""
            ),
            {"demo": demo.who},
        ).rowcount
        if gone:
            record(conn, demo, "allocation.rules.remove_demo", "demo rules", {"versions": gone})
    return gone


# --- the recompute ------------------------------------------------------------------------------------
_COSTS = """
CREATE TEMP TABLE alloc_costs ON COMMIT DROP AS
SELECT to_char(a.charge_month, 'YYYY-MM') AS charge_month, cur.currency_code AS billing_currency,
       s.subscription_id, s.subscription_name, rg.resource_group, sv.service_name, r.resource_id,
       sum(a.actual_cost) AS actual_cost, sum(a.amortized_cost) AS amortized_cost
FROM mart.agg_cost_resource_monthly a
JOIN mart.dim_subscription s ON s.subscription_key = a.subscription_key
JOIN mart.dim_resource_group rg ON rg.resource_group_key = a.resource_group_key
JOIN mart.dim_service sv ON sv.service_key = a.service_key
JOIN mart.dim_resource r ON r.resource_key = a.resource_key
JOIN mart.dim_currency cur ON cur.currency_key = a.currency_key
GROUP BY 1, 2, 3, 4, 5, 6, 7"""
_TAGS = """
CREATE TEMP TABLE alloc_tags ON COMMIT DROP AS
SELECT r.resource_id, t.tag_key, t.tag_value, b.last_seen
FROM mart.bridge_resource_tag b
JOIN mart.dim_tag t ON t.tag_id = b.tag_id
JOIN mart.dim_resource r ON r.resource_key = b.resource_key"""


def _recompute(conn: sa.Connection, ruleset: RuleSet, *, version: int | None, run_id: str | None) -> Recompute:
    plan = alloc_sql.build(ruleset, version=version or 0, dialect=alloc_sql.POSTGRES)
    conn.execute(sa.text(_COSTS))
    conn.execute(sa.text(_TAGS))
    raw_keys = conn.execute(sa.text("SELECT DISTINCT tag_key FROM alloc_tags")).scalars().all()
    conn.execute(
        sa.text("CREATE TEMP TABLE alloc_keymap (raw_key text, canonical_key text, priority int) ON COMMIT DROP")
    )
    if rows := alloc_sql.keymap_rows(ruleset, raw_keys):
        conn.execute(sa.text("INSERT INTO alloc_keymap VALUES (:raw_key, :canonical_key, :priority)"), rows)
    conn.execute(
        sa.text(
            "CREATE TEMP TABLE alloc_parents (subscription text, resource_group text, tag_key text, tag_value text,"
            " lvl int) ON COMMIT DROP"
        )
    )
    if plan.parents:
        conn.execute(
            sa.text("INSERT INTO alloc_parents VALUES (:s, :g, :k, :v, :l)"),
            [dict(zip("sgkvl", p, strict=True)) for p in plan.parents],
        )
    params = plan.params_row() or {"p_none": ""}
    columns = ", ".join(f"{name} text" for name in params)
    conn.execute(sa.text(f"CREATE TEMP TABLE alloc_params ({columns}) ON COMMIT DROP"))
    conn.execute(sa.text(f"INSERT INTO alloc_params VALUES ({', '.join(':' + n for n in params)})"), params)
    conn.execute(sa.text("DELETE FROM mart.cost_allocation"))
    conn.execute(sa.text("DELETE FROM mart.tag_coverage"))
    month = "to_date(x.charge_month || '-01', 'YYYY-MM-DD')"
    rows = conn.execute(
        sa.text(
            f"""INSERT INTO mart.cost_allocation (charge_month, billing_currency, owner, allocated_method_id, method,
                    share, subscription_id, resource_group, service_name, resource_id, actual_cost, amortized_cost,
                    allocated_method_details, rules_version)
                SELECT {month}, x.billing_currency, x.owner, x.allocated_method_id, x.method, x.share,
                       x.subscription_id, x.resource_group, x.service_name, x.resource_id, x.actual_cost,
                       x.amortized_cost, x.allocated_method_details, :version
                FROM ({plan.allocation_sql}) x"""
        ),
        {"version": version or 0},
    ).rowcount
    conn.execute(
        sa.text(
            f"""INSERT INTO mart.tag_coverage (charge_month, billing_currency, tag_key, total_cost, untagged_cost,
                    rules_version)
                SELECT {month}, x.billing_currency, x.tag_key, x.total_cost, coalesce(x.untagged_cost, 0), :version
                FROM ({plan.coverage_sql}) x"""
        ),
        {"version": version or 0},
    )
    _check_conserved(conn)
    conn.execute(
        sa.text(
            """INSERT INTO mart.allocation_state (id, rules_version, computed_at, rows, run_id)
               VALUES (true, :v, now(), :rows, :run)
               ON CONFLICT (id) DO UPDATE SET rules_version = EXCLUDED.rules_version,
                   computed_at = EXCLUDED.computed_at, rows = EXCLUDED.rows, run_id = EXCLUDED.run_id"""
        ),
        {"v": version, "rows": rows, "run": run_id},
    )
    share = conn.execute(
        sa.text(
            """SELECT sum(coalesce(amortized_cost, actual_cost)) FILTER (WHERE owner IS NULL)
                      / nullif(sum(coalesce(amortized_cost, actual_cost)), 0)
               FROM mart.cost_allocation
               WHERE billing_currency = (SELECT billing_currency FROM mart.cost_allocation GROUP BY 1
                                         ORDER BY sum(coalesce(amortized_cost, actual_cost)) DESC LIMIT 1)"""
        )
    ).scalar()
    months = conn.execute(sa.text("SELECT count(DISTINCT charge_month) FROM mart.cost_allocation")).scalar()
    return Recompute(version, rows, int(months or 0), None if share is None else float(share))


def _check_conserved(conn: sa.Connection) -> None:
    """Allocated = source, exactly, per month and currency, for actual and amortized cost."""
    bad = (
        conn.execute(
            sa.text(
                """WITH src AS (SELECT charge_month, billing_currency, sum(actual_cost) AS a, sum(amortized_cost) AS e
                            FROM alloc_costs GROUP BY 1, 2),
                    out AS (SELECT to_char(charge_month, 'YYYY-MM') AS charge_month, billing_currency,
                                   sum(actual_cost) AS a, sum(amortized_cost) AS e
                            FROM mart.cost_allocation GROUP BY 1, 2)
               SELECT coalesce(src.charge_month, out.charge_month) AS month,
                      coalesce(src.billing_currency, out.billing_currency) AS currency,
                      src.a AS source_actual, out.a AS allocated_actual, src.e AS source_amortized,
                      out.e AS allocated_amortized
               FROM src FULL JOIN out USING (charge_month, billing_currency)
               WHERE src.a IS DISTINCT FROM out.a OR src.e IS DISTINCT FROM out.e
               LIMIT 5"""
            )
        )
        .mappings()
        .all()
    )
    if bad:
        raise ConservationError(
            f"allocated cost differs from source cost (nothing was changed): {list(map(dict, bad))}"
        )


# --- reads (reader engine) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    rules_version: int | None  # the version the results were computed with (None: no rules)
    computed_at: dt.datetime | None
    latest_version: int | None  # the version in force


def state(engine: sa.Engine) -> State:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT rules_version, computed_at FROM mart.allocation_state")).first()
        latest = conn.execute(sa.text("SELECT max(version) FROM mart.allocation_rulesets")).scalar()
    return State(row[0] if row else None, row[1] if row else None, latest)


def raw_tag_keys(engine: sa.Engine) -> dict[str, int]:
    """Tag keys as loaded (silver trims and case-folds them) with how many resources carry each."""
    sql = """SELECT t.tag_key, count(DISTINCT b.resource_key) FROM mart.bridge_resource_tag b
             JOIN mart.dim_tag t ON t.tag_id = b.tag_id GROUP BY 1 ORDER BY 2 DESC"""
    with engine.connect() as conn:
        return {k: int(n) for k, n in conn.execute(sa.text(sql))}


def months(engine: sa.Engine) -> list[dt.date]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT DISTINCT charge_month FROM mart.cost_allocation ORDER BY 1 DESC")).scalars()
        )


def currencies(engine: sa.Engine) -> list[str]:
    sql = """SELECT billing_currency FROM mart.cost_allocation GROUP BY 1
             ORDER BY sum(coalesce(amortized_cost, actual_cost)) DESC"""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)).scalars())


def owner_months(
    engine: sa.Engine, *, start: dt.date, end: dt.date, currency: str, metric: str = "amortized"
) -> list[dict]:
    """Cost per owner per month in [start, end] (month starts); the unallocated share as owner UNALLOCATED."""
    cost = _COST[metric]
    sql = f"""SELECT charge_month AS month, coalesce(owner, :unallocated) AS owner, owner IS NULL AS unallocated,
                     sum({cost}) AS cost, sum({cost}) FILTER (WHERE method = 'split') AS shared_cost
              FROM mart.cost_allocation
              WHERE charge_month BETWEEN :start AND :end AND billing_currency = :currency
              GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC"""
    params = {"start": start, "end": end, "currency": currency, "unallocated": UNALLOCATED}
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


@dataclass(frozen=True)
class MonthSummary:
    month: dt.date
    currency: str
    total: Decimal | None
    allocated: Decimal | None
    unallocated: Decimal | None
    unallocated_share: float | None
    owners: int
    rules_version: int | None


def month_summary(engine: sa.Engine, *, month: dt.date, currency: str, metric: str = "amortized") -> MonthSummary:
    cost = _COST[metric]
    sql = f"""SELECT sum({cost}) AS total, sum({cost}) FILTER (WHERE owner IS NOT NULL) AS allocated,
                     coalesce(sum({cost}) FILTER (WHERE owner IS NULL), 0) AS unallocated,
                     count(DISTINCT owner) AS owners, max(rules_version) AS version
              FROM mart.cost_allocation WHERE charge_month = :month AND billing_currency = :currency"""
    with engine.connect() as conn:
        r = conn.execute(sa.text(sql), {"month": month, "currency": currency}).mappings().one()
    share = None if not r["total"] else float(r["unallocated"] / r["total"])
    return MonthSummary(month, currency, r["total"], r["allocated"], r["unallocated"], share, int(r["owners"]),
                        r["version"])  # fmt: skip


def unallocated_reasons(engine: sa.Engine, *, month: dt.date, currency: str, metric: str = "amortized") -> list[dict]:
    """What the unallocated share is made of: reason, rule, service, cost (largest first)."""
    cost = _COST[metric]
    sql = f"""SELECT method AS reason, allocated_method_id AS rule, service_name, subscription_id,
                     sum({cost}) AS cost, count(DISTINCT resource_id) AS resources
              FROM mart.cost_allocation
              WHERE owner IS NULL AND charge_month = :month AND billing_currency = :currency
              GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC NULLS LAST LIMIT 50"""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), {"month": month, "currency": currency}).mappings()]


def owner_lines(
    engine: sa.Engine, *, owner: str, month: dt.date, currency: str, metric: str = "amortized"
) -> list[dict]:
    """One owner's showback lines for a month: what the cost is, which rule gave it and the share taken."""
    cost = _COST[metric]
    sql = f"""SELECT subscription_id, resource_group, service_name, resource_id, allocated_method_id AS rule,
                     method, share, sum(actual_cost) AS actual_cost, sum(amortized_cost) AS amortized_cost,
                     sum({cost}) AS cost, max(rules_version) AS rules_version
              FROM mart.cost_allocation
              WHERE charge_month = :month AND billing_currency = :currency
                AND (owner = :owner OR (owner IS NULL AND :owner = :unallocated))
              GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY cost DESC NULLS LAST, resource_id"""
    params = {"owner": owner, "month": month, "currency": currency, "unallocated": UNALLOCATED}
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def coverage(engine: sa.Engine, *, currency: str) -> list[dict]:
    """Per month and canonical tag key: total cost, cost without the key, and that share."""
    sql = """SELECT charge_month AS month, tag_key, total_cost, untagged_cost,
                    CAST(untagged_cost / nullif(total_cost, 0) AS double precision) AS untagged_share
             FROM mart.tag_coverage WHERE billing_currency = :currency ORDER BY 1, 2"""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), {"currency": currency}).mappings()]
