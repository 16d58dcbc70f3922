"""The mart SQL of budgets: the budget rows, their scope and filters as one WHERE on natural keys, daily spend, alerts, forecasts kept.

A budget names members by natural key (subscription id, service name, region, provider name, tag value), AND
across dimensions and OR within one. A resource group is found by (subscription, group): dim_resource_group's
natural key is the pair, and one group name exists in many subscriptions.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

TAG_PREFIX = "tag:"
# Dimensions a budget filters on: dimension table, key column on the cost tables, natural key.
FILTER_DIMENSIONS = {
    "subscription": ("dim_subscription", "subscription_key", "subscription_id"),
    "service": ("dim_service", "service_key", "service_name"),
    "region": ("dim_region", "region_key", "region"),
    "provider": ("dim_provider", "provider_key", "provider_name"),
}
_METRIC_COLUMN = {"actual": "actual_cost", "amortized": "amortized_cost"}
# How each scope finds its members in the aggregate: dimension table, key, natural key.
SCOPE_DIM = {
    "subscription": ("dim_subscription", "subscription_key", "subscription_id"),
    "resource_group": ("dim_resource_group", "resource_group_key", "resource_group"),
    "service": ("dim_service", "service_key", "service_name"),
}


def conditions(budget: Mapping[str, Any]) -> dict[str, list[str]]:
    """The budget's scope and filters as {dimension: values}: "subscription", "service", "region", "provider",
    "resource_group" (with the subscription in "subscription") or "tag:<key>". The scope and a filter on the
    same dimension both hold (AND), so the scope's member is kept apart under its own entry when they differ."""
    out: dict[str, list[str]] = {k: list(v) for k, v in (budget.get("filters") or {}).items() if v}
    scope, value = budget.get("scope_type") or "total", budget.get("scope_value") or ""
    if scope == "total":
        return out
    name = f"{TAG_PREFIX}{budget.get('tag_key') or ''}" if scope == "tag" else scope
    if name in out and out[name] != [value]:
        # Both must hold: the scope narrows the filter to its member (or to nothing if it is not among them).
        out[name] = [value] if value in out[name] else []
    else:
        out[name] = [value]
    return out


def _where(budget: Mapping[str, Any], params: dict[str, Any]) -> tuple[str, str]:
    """(table, WHERE clauses after the date and currency) over alias `a` for the budget's conditions. The tag
    aggregate answers a budget on one tag key (optionally by subscription) as it always has; any other mix
    with a tag reads the fact, a resource's tags coming from the bridge as the explorer reads them."""
    found = conditions(budget)
    tags = {k: v for k, v in found.items() if k.startswith(TAG_PREFIX)}
    plain = {k: v for k, v in found.items() if not k.startswith(TAG_PREFIX)}
    if tags and len(tags) == 1 and set(plain) <= {"subscription"}:
        table = "agg_cost_by_tag"
        key, values = next(iter(tags.items()))
        params["tk"], params["tv"] = key[len(TAG_PREFIX) :], values
        clauses = ["a.tag_key = :tk", "a.tag_value = ANY(CAST(:tv AS text[]))"]
    else:
        table = "fact_cost_daily" if tags else "agg_cost_daily"
        clauses = []
        for i, (key, values) in enumerate(sorted(tags.items())):
            params[f"tk{i}"], params[f"tv{i}"] = key[len(TAG_PREFIX) :], values
            clauses.append(
                f"a.resource_key IN (SELECT b.resource_key FROM mart.bridge_resource_tag b JOIN mart.dim_tag t"
                f" USING (tag_id) WHERE t.tag_key = :tk{i} AND t.tag_value = ANY(CAST(:tv{i} AS text[])))"
            )
    for name, values in sorted(plain.items()):
        if name == "resource_group":
            params["rg"], params["rg_subs"] = values, plain.get("subscription") or []
            clauses.append(
                "a.resource_group_key IN (SELECT resource_group_key FROM mart.dim_resource_group"
                " WHERE resource_group = ANY(CAST(:rg AS text[])) AND subscription_id = ANY(CAST(:rg_subs AS text[])))"
            )
            continue
        if name not in FILTER_DIMENSIONS:
            raise ValueError(f"unknown budget scope or filter {name!r}: use {sorted(FILTER_DIMENSIONS)} or tag:<key>")
        dim, key, natural = FILTER_DIMENSIONS[name]
        params[f"f_{name}"] = values
        clauses.append(f"a.{key} IN (SELECT {key} FROM mart.{dim} WHERE {natural} = ANY(CAST(:f_{name} AS text[])))")
    return table, "".join(f" AND {c}" for c in clauses)


def daily_spend(
    conn: sa.Connection, budget: Mapping[str, Any], start: dt.date, end: dt.date
) -> list[tuple[dt.date, Decimal]]:
    """(day, cost) of the budget's scope and filters from start to end inclusive, in the budget's currency only
    (days without cost have no row); a row lacking the metric counts nothing."""
    col = _METRIC_COLUMN[budget.get("metric") or "actual"]
    params: dict[str, Any] = {"start": start, "end": end, "cur": budget["currency"]}
    table, where = _where(budget, params)
    sql = f"""SELECT a.charge_date, coalesce(sum(a.{col}), 0) FROM mart.{table} a
              WHERE a.charge_date BETWEEN :start AND :end
                AND a.currency_key = (SELECT currency_key FROM mart.dim_currency WHERE currency_code = :cur){where}
              GROUP BY 1 ORDER BY 1"""
    return [(day, Decimal(cost)) for day, cost in conn.execute(sa.text(sql), params)]


def spend(conn: sa.Connection, budget: Mapping[str, Any], start: dt.date, end: dt.date) -> float:
    """The budget's spend from start to end inclusive in its own currency."""
    return float(sum((cost for _, cost in daily_spend(conn, budget, start, end)), Decimal(0)))


def scope_currencies(conn: sa.Connection, budget: Mapping[str, Any], start: dt.date, end: dt.date) -> list[str]:
    """The billing currencies the budget's scope and filters have cost in from start to end."""
    params: dict[str, Any] = {"start": start, "end": end}
    table, where = _where(budget, params)
    sql = f"""SELECT DISTINCT c.currency_code FROM mart.{table} a JOIN mart.dim_currency c USING (currency_key)
              WHERE a.charge_date BETWEEN :start AND :end{where} ORDER BY 1"""
    return list(conn.execute(sa.text(sql), params).scalars())


def filter_options(engine: sa.Engine, *, limit: int = 500) -> dict[str, list[tuple[str, str]]]:
    """(natural key, label) of each filter dimension's members for the Budgets form, plus "tag" -> (key, key)."""
    out: dict[str, list[tuple[str, str]]] = {}
    with engine.connect() as conn:
        for name, (dim, _key, natural) in FILTER_DIMENSIONS.items():
            sql = f"SELECT {natural}, label FROM mart.{dim} WHERE {natural} <> '' ORDER BY label, 1 LIMIT :n"
            out[name] = [tuple(r) for r in conn.execute(sa.text(sql), {"n": limit})]
        keys = conn.execute(sa.text("SELECT DISTINCT tag_key FROM mart.dim_tag ORDER BY 1 LIMIT :n"), {"n": limit})
        out["tag"] = [(k, k) for k in keys.scalars()]
    return out


def first_cost_day(conn: sa.Connection) -> dt.date | None:
    return conn.execute(sa.text("SELECT min(charge_date) FROM mart.agg_cost_daily")).scalar()


def group_subscriptions(conn: sa.Connection, resource_group: str) -> list[str]:
    """The subscriptions that have a resource group of this name (the mart's spelling, as the evaluator matches)."""
    sql = """SELECT DISTINCT subscription_id FROM mart.dim_resource_group
             WHERE resource_group = :rg AND subscription_id <> '' ORDER BY 1"""
    return list(conn.execute(sa.text(sql), {"rg": resource_group}).scalars())


def analytics_forecast(
    conn: sa.Connection, *, scope_type: str, scope_value: str, metric: str, currency: str, after: dt.date, end: dt.date
) -> list[sa.Row]:
    """The days after `after` up to `end` of the latest forecast generation the analytics step wrote for one
    series in one currency (forecast_date, point, method, backtest_metric, backtest_error, first_date: the
    generation's first forecast day). A row without a currency summed several and is never used."""
    sql = """
        WITH latest AS (SELECT max(generated_at) AS g FROM mart.forecasts
                        WHERE scope_type = :st AND scope_value = :sv AND metric = :m AND currency = :cur),
             gen AS (SELECT f.* FROM mart.forecasts f, latest
                     WHERE f.scope_type = :st AND f.scope_value = :sv AND f.metric = :m AND f.currency = :cur
                       AND f.generated_at = latest.g)
        SELECT forecast_date, point, method, backtest_metric, backtest_error::float8,
               (SELECT min(forecast_date) FROM gen) AS first_date
        FROM gen WHERE forecast_date > :after AND forecast_date <= :end ORDER BY forecast_date"""
    params = {"st": scope_type, "sv": scope_value, "m": metric, "cur": currency, "after": after, "end": end}
    return list(conn.execute(sa.text(sql), params))


FORECAST_COLUMNS = (
    "budget_id",
    "period_start",
    "period_end",
    "as_of",
    "currency",
    "spent",
    "forecast_total",
    "lower_bound",
    "upper_bound",
    "method",
    "backtest_metric",
    "backtest_error",
    "backtest_start",
    "backtest_end",
    "exceed_date",
    "run_id",
)


def save_forecast(conn: sa.Connection, row: Mapping[str, Any]) -> None:
    """Keep the budget's latest forecast for its period (one row per budget and period, replaced each run)."""
    cols = ", ".join(FORECAST_COLUMNS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in FORECAST_COLUMNS if c not in ("budget_id", "period_start"))
    conn.execute(
        sa.text(
            f"INSERT INTO mart.budget_forecasts ({cols}) VALUES ({', '.join(':' + c for c in FORECAST_COLUMNS)})"
            f" ON CONFLICT (budget_id, period_start) DO UPDATE SET {sets}, evaluated_at = now()"
        ),
        {c: row.get(c) for c in FORECAST_COLUMNS},
    )


def latest_forecasts(engine: sa.Engine) -> list[dict[str, Any]]:
    """Each budget's forecast for its most recent period evaluated (reader role is enough)."""
    sql = f"""SELECT DISTINCT ON (budget_id) {", ".join(FORECAST_COLUMNS)}, evaluated_at
              FROM mart.budget_forecasts ORDER BY budget_id, period_start DESC"""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]


# --- the budgets themselves (mart.budgets) -------------------------------------------------------------------
def get_budget(engine: sa.Engine, budget_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM mart.budgets WHERE budget_id = :id"), {"id": budget_id}).mappings()
        found = row.one_or_none()
    return dict(found) if found else None


def list_budgets(engine: sa.Engine, *, enabled_only: bool = False) -> list[dict[str, Any]]:
    where = " WHERE enabled" if enabled_only else ""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM mart.budgets{where} ORDER BY name")).mappings()]


def subscriptions(conn: sa.Connection) -> list[tuple[str, str | None]]:
    """(subscription id, name) of every loaded subscription."""
    # '' is the dimension's "unknown" member, not a subscription anyone can mean.
    sql = "SELECT subscription_id, subscription_name FROM mart.dim_subscription WHERE subscription_id <> ''"
    return [tuple(r) for r in conn.execute(sa.text(sql)).all()]


def subscription_known(conn: sa.Connection, value: str) -> bool:
    """Whether the mart holds a subscription with this id."""
    return (
        conn.execute(
            sa.text("SELECT 1 FROM mart.dim_subscription WHERE subscription_id = :v AND subscription_id <> ''"),
            {"v": value},
        ).first()
        is not None
    )


def insert_budget(conn: sa.Connection, data: Mapping[str, Any]) -> int:
    """A new budget row from validated values; its id."""
    cols = ", ".join(data)
    return conn.execute(
        sa.text(f"INSERT INTO mart.budgets ({cols}) VALUES ({', '.join(_bind(k) for k in data)}) RETURNING budget_id"),
        _bound(data),
    ).scalar_one()


def scope_for_update(conn: sa.Connection, budget_id: int) -> dict[str, Any] | None:
    """The budget's scope and filters, locked for the rest of the transaction; None for an unknown budget."""
    row = (
        conn.execute(
            sa.text("SELECT scope_type, scope_value, filters FROM mart.budgets WHERE budget_id = :id FOR UPDATE"),
            {"id": budget_id},
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


def update_budget(conn: sa.Connection, budget_id: int, data: Mapping[str, Any]) -> int:
    """Write these validated values on the budget; how many rows changed (0: no such budget)."""
    sets = ", ".join(f"{k} = {_bind(k)}" for k in data)
    return conn.execute(
        sa.text(f"UPDATE mart.budgets SET {sets}, updated_at = now() WHERE budget_id = :id"),
        {**_bound(data), "id": budget_id},
    ).rowcount


def delete_budget(conn: sa.Connection, budget_id: int) -> str | None:
    """Delete the budget; its name, None when there was none (its alert history stays, budget_id set null)."""
    return conn.execute(
        sa.text("DELETE FROM mart.budgets WHERE budget_id = :id RETURNING name"), {"id": budget_id}
    ).scalar_one_or_none()


def _bind(column: str) -> str:
    return f"CAST(:{column} AS jsonb)" if column == "filters" else f":{column}"


def _bound(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v, sort_keys=True) if k == "filters" else v for k, v in data.items()}


def last_cost_day(conn: sa.Connection) -> dt.date | None:
    """The newest charge day the mart holds (None while it is empty)."""
    return conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()


def period_bounds(period: str, day: dt.date) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of the budget period containing `day`."""
    if period == "monthly":
        start = day.replace(day=1)
        months = 1
    elif period == "quarterly":
        start = dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        months = 3
    elif period == "yearly":
        start, months = dt.date(day.year, 1, 1), 12
    else:
        raise ValueError(period)
    year, month = divmod(start.month - 1 + months, 12)
    return start, dt.date(start.year + year, month + 1, 1) - dt.timedelta(days=1)


def record_alert(conn: sa.Connection, budget, start, kind, pct, value, run_id) -> int | None:
    """The alert's id, or None when this threshold already alerted in this period (once per period)."""
    return conn.execute(
        sa.text(
            """
            INSERT INTO mart.budget_alerts (budget_id, budget_name, period_start, threshold_type, threshold_pct,
                amount_at_alert, budget_amount, currency, run_id, webhook_status)
            VALUES (:bid, :name, :start, :kind, :pct, :value, :amount, :cur, :run_id, :wh)
            ON CONFLICT ON CONSTRAINT uq_budget_alerts_once DO NOTHING
            RETURNING alert_id"""
        ),
        {
            "bid": budget["budget_id"],
            "name": budget["name"],
            "start": start,
            "kind": kind,
            "pct": pct,
            "value": value,
            "amount": float(budget["amount"]),
            "cur": budget["currency"],
            "run_id": run_id,
            "wh": "pending" if budget.get("webhook_url") else "none",
        },
    ).scalar()
