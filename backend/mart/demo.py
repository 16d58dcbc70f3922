"""The demo estate's side of the mart and ops tables: whether it has delivered, and emptying what it loaded."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

DEMO_SOURCES = ("synthetic",)  # cursor / batch / bronze source names of the demo estate
DEMO_BUDGET_PREFIX = "Demo: "

# Mart tables that hold cost data or what was computed from it (budgets and the agent audit are the user's).
_MART_DATA = (
    "fact_cost_daily",
    "agg_cost_daily",
    "agg_cost_monthly",
    "agg_cost_resource_monthly",
    "agg_cost_by_tag",
    "bridge_resource_tag",
    "dim_tag",
    "forecasts",
    "forecast_totals",
    "budget_alerts",
    "reconciliation_results",
    "reconciliation_checks",
)
_MART_DIMENSIONS = (
    "dim_billing_account",
    "dim_subscription",
    "dim_resource_group",
    "dim_resource",
    "dim_region",
    "dim_service",
    "dim_meter",
    "dim_pricing_model",
    "dim_charge_category",
    "dim_currency",
    "dim_source",
    "dim_provider",
    "dim_service_provider",
)


def _delivered_any(conn: sa.Connection, sources: list[str]) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM ops.source_cursors WHERE source IN :sources)").bindparams(
                sa.bindparam("sources", expanding=True)
            ),
            {"sources": sources},
        ).scalar()
    )


def demo_loaded(conn: sa.Connection) -> bool:
    """Whether the demo estate has delivered anything (works on the reader role: source_cursors is readable)."""
    return _delivered_any(conn, list(DEMO_SOURCES))


def delivered(conn: sa.Connection, sources: list[str]) -> bool:
    """Whether any of these (real) sources has delivered a day."""
    return _delivered_any(conn, sources)


def empty_demo_data(engine: sa.Engine) -> None:
    """Empty the mart's cost tables, drop every dimension member but "(none)", and forget the demo's cursors,
    batches, budgets and every stage progress mark, in one transaction: gold and the mart start over from
    what silver holds (real rows, if any)."""
    with engine.begin() as conn:
        analytics = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'mart' AND tablename LIKE 'anomal%'")
            )
        ]
        tables = [t for t in _MART_DATA if _exists(conn, t)] + analytics
        conn.execute(sa.text(f"TRUNCATE {', '.join(f'mart.{t}' for t in tables)}"))
        for dim in _MART_DIMENSIONS:
            if _exists(conn, dim):
                key = conn.execute(
                    sa.text(
                        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"
                    ),
                    {"t": f"mart.{dim}"},
                ).scalar_one()
                conn.execute(sa.text(f"DELETE FROM mart.{dim} WHERE {key} <> 0"))  # 0 is the "(none)" member
        params = {"demo": list(DEMO_SOURCES)}
        for table in ("ops.source_cursors", "ops.source_batches"):
            conn.execute(
                sa.text(f"DELETE FROM {table} WHERE source IN :demo").bindparams(sa.bindparam("demo", expanding=True)),
                params,
            )
        conn.execute(sa.text("DELETE FROM mart.budgets WHERE name LIKE :p"), {"p": f"{DEMO_BUDGET_PREFIX}%"})
        # Gold and the mart start over: with no progress mark every month is pending (from real silver, if any).
        conn.execute(sa.text("DELETE FROM ops.stage_progress"))


def budget_candidates(engine: sa.Engine) -> tuple[dt.date, list[tuple[str, str, str, Decimal]]] | None:
    """For the demo's budgets: the latest charge day and the three subscriptions that spent most from the
    first of its month, as (subscription id, label, currency, spent). None unless the demo is loaded and no
    budget exists yet (the user's budgets are never touched), or while the mart holds no cost."""
    with engine.connect() as conn:
        if not demo_loaded(conn) or conn.execute(sa.text("SELECT count(*) FROM mart.budgets")).scalar():
            return None
        as_of = conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()
        if as_of is None:
            return None
        top = conn.execute(
            sa.text(
                "SELECT s.subscription_id, s.label, c.currency_code, sum(a.actual_cost) AS spent "
                "FROM mart.agg_cost_daily a JOIN mart.dim_subscription s USING (subscription_key) "
                "JOIN mart.dim_currency c USING (currency_key) "
                "WHERE a.charge_date BETWEEN :start AND :as_of AND s.subscription_id <> '' "
                "GROUP BY 1, 2, 3 HAVING sum(a.actual_cost) > 0 ORDER BY 4 DESC LIMIT 3"
            ),
            {"start": as_of.replace(day=1), "as_of": as_of},
        ).all()
    return as_of, [tuple(r) for r in top]


def _exists(conn: sa.Connection, table: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"mart.{table}"}).scalar()
