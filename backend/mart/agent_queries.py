"""The fixed queries behind the agent's tools (members, anomalies, forecasts, budgets) and its vocabulary.

The agent's run_sql tool is not here: it runs the model's own SELECT through backend.agent.sqlguard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa


# --- members -------------------------------------------------------------------------------------------
def services_in_categories(engine: sa.Engine, categories: list[str]) -> list[str]:
    """The services (labels) of these service categories, case-insensitively."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT DISTINCT label FROM mart.dim_service WHERE lower(service_category) IN :c").bindparams(
                sa.bindparam("c", expanding=True)
            ),
            {"c": [c.lower() for c in categories]},
        ).scalars()
        return list(rows)


def subscription_ids(engine: sa.Engine, label: str) -> list[str]:
    """The ids of the subscriptions named `label` (display names are not unique in Azure)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT subscription_id FROM mart.dim_subscription WHERE label = :l ORDER BY 1"), {"l": label}
            ).scalars()
        )


def service_categories(engine: sa.Engine) -> dict[str, str | None]:
    """Each service's category (None where the source gave none)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT label, service_category FROM mart.dim_service")).all()
    return dict(rows)


def budget_names(engine: sa.Engine) -> tuple[str, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text("SELECT name FROM mart.v_budgets")).scalars())


# --- anomalies -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnomalyFilter:
    """Which anomalies a tool asks about: every field left empty is not a condition."""

    metric: str
    start: dt.date | None = None  # inclusive
    end: dt.date | None = None  # inclusive
    level: str = ""
    members: list[str] = field(default_factory=list)  # stored dimension values of `level`
    kind: str = ""
    status: str = ""
    group_level: str = ""  # counting by the members of one level: only that level's anomalies


# Groups count_anomalies knows by name; "level_member" counts the members of `AnomalyFilter.group_level`.
ANOMALY_GROUPS = {
    "level": "a.level",
    "member": "a.level || ' ' || coalesce(s.label, a.dimension_value)",
    "kind": "a.kind",
    "status": "a.status",
    "day": "a.charge_date",
    "month": "date_trunc('month', a.charge_date)::date",
}
_GROUP_EXPR = {**ANOMALY_GROUPS, "level_member": "coalesce(s.label, a.dimension_value)"}


def _where(f: AnomalyFilter) -> tuple[list[str], dict[str, Any]]:
    where, params = ["a.metric = :metric"], {"metric": f.metric}
    if f.start is not None:
        where.append("a.charge_date BETWEEN :d0 AND :d1")
        params |= {"d0": f.start, "d1": f.end}
    if f.level:
        where.append("a.level = :level")
        params["level"] = f.level
        if f.members:
            where.append("a.dimension_value IN :members")
            params["members"] = list(f.members)
    if f.kind:
        where.append("a.kind = :kind")
        params["kind"] = f.kind
    if f.status:
        where.append("a.status = :status")
        params["status"] = f.status
    if f.group_level:
        where.append("a.level = :group_level")
        params["group_level"] = f.group_level
    return where, params


def _statement(select: str, f: AnomalyFilter, tail: str = "") -> tuple[sa.TextClause, dict[str, Any]]:
    where, params = _where(f)
    # Subscriptions are stored by id; users know them by name.
    statement = sa.text(
        f"SELECT {select} FROM mart.anomalies a LEFT JOIN mart.dim_subscription s "
        f"ON a.level = 'subscription' AND s.subscription_id = a.dimension_value WHERE {' AND '.join(where)} {tail}"
    )
    if "members" in params:
        statement = statement.bindparams(sa.bindparam("members", expanding=True))
    return statement, params


# The columns an anomaly list shows: subscriptions by name (labelled) or as the detector stored them.
_LISTED = (
    "a.anomaly_id, a.charge_date, a.level, coalesce(s.label, a.dimension_value) AS dimension_value, "
    "a.kind, a.status, a.expected, a.actual, a.impact, a.currency, a.severity"
)
_STORED = (
    "a.anomaly_id, a.level, a.dimension_value, a.charge_date, a.kind, a.expected, a.actual, a.impact, "
    "a.currency, a.severity, a.contributors, a.status"
)


def anomalies(engine: sa.Engine, f: AnomalyFilter, *, limit: int, labelled: bool = True) -> list[Any]:
    """The largest-impact anomalies (newest first among equals); `labelled` names subscriptions, otherwise the
    rows are as the detector stored them, with their contributors."""
    statement, params = _statement(
        _LISTED if labelled else _STORED, f, "ORDER BY abs(a.impact) DESC NULLS LAST, a.charge_date DESC LIMIT :limit"
    )
    with engine.connect() as conn:
        return conn.execute(statement, {**params, "limit": limit}).all()


def count_anomalies(engine: sa.Engine, f: AnomalyFilter, *, group: str = "") -> tuple[list[str], list[Any], list[Any]]:
    """(columns, rows of count and open count per group or one total row, (currency, impact) rows)."""
    expr = _GROUP_EXPR.get(group, "")
    counts = "count(*) AS anomalies, count(*) FILTER (WHERE a.status = 'open') AS open"
    select = f"{expr} AS grp, {counts}" if expr else counts
    statement, params = _statement(select, f, "GROUP BY 1 ORDER BY 2 DESC, 1" if expr else "")
    impacts, impact_params = _statement("a.currency, sum(a.impact)", f, "GROUP BY 1 ORDER BY 1")
    with engine.connect() as conn:
        result = conn.execute(statement, params)
        columns, rows = list(result.keys()), result.all()
        return columns, rows, conn.execute(impacts, impact_params).all()


# --- forecasts -----------------------------------------------------------------------------------------
def latest_forecast(
    engine: sa.Engine,
    *,
    scope_type: str,
    scope_value: str,
    start: dt.date,
    end: dt.date,
    metric: str,
    currency: str | None = None,
) -> list[Any]:
    """The scope's latest forecast generation in one currency, days start..end. Forecasts are per billing currency
    and one run's currencies share a generation, so `currency` None takes the first currency (in code order) of
    the latest generation rather than adding two currencies' points up."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                """WITH latest AS (
                       SELECT generated_at, currency FROM mart.forecasts
                       WHERE scope_type = :t AND scope_value = :v AND metric = :m
                         AND (CAST(:c AS text) IS NULL OR currency = :c)
                       ORDER BY generated_at DESC, currency LIMIT 1)
                   SELECT f.forecast_date, f.point, f.lower_bound, f.upper_bound, f.currency, f.method
                   FROM mart.forecasts f JOIN latest l ON l.generated_at = f.generated_at AND l.currency = f.currency
                   WHERE f.scope_type = :t AND f.scope_value = :v AND f.metric = :m
                     AND f.forecast_date BETWEEN :s AND :e
                   ORDER BY f.forecast_date"""
            ),
            {"t": scope_type, "v": scope_value, "m": metric, "c": currency, "s": start, "e": end},
        ).all()


def forecast_currencies(engine: sa.Engine, *, scope_type: str, scope_value: str, metric: str) -> list[str]:
    """The currencies the scope has forecasts in, in code order."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT currency FROM mart.forecasts WHERE scope_type = :t AND scope_value = :v"
                    " AND metric = :m ORDER BY 1"
                ),
                {"t": scope_type, "v": scope_value, "m": metric},
            ).scalars()
        )


# --- budgets -------------------------------------------------------------------------------------------
def enabled_budgets(engine: sa.Engine, *, name: str = "") -> list[Any]:
    """Enabled budgets whose name (or subscription's name) contains `name`, with the subscription's name.

    A subscription budget's scope_value is the subscription_id, as the Budgets page saves it and the
    evaluator matches it; users think in names, so the name is looked up to show it and to be asked by."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT b.budget_id, b.name, b.scope_type, b.scope_value, b.tag_key, b.metric, b.amount, b.currency, "
                "b.period, b.filters, b.scope_candidates, s.label AS subscription "
                "FROM mart.v_budgets b LEFT JOIN mart.dim_subscription s "
                "ON b.scope_type = 'subscription' AND s.subscription_id = b.scope_value "
                "WHERE b.enabled AND (:name = '' OR b.name ILIKE :pattern OR s.label ILIKE :pattern) ORDER BY b.name"
            ),
            {"name": name, "pattern": f"%{name}%"},
        ).all()


def highest_actual_alerts(engine: sa.Engine) -> dict[int, float]:
    """Per budget, the highest actual-spend threshold (percent) it has alerted at."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT budget_id, max(threshold_pct) FROM mart.budget_alerts WHERE threshold_type = 'actual' "
                "GROUP BY budget_id"
            )
        ).all()
    return {b: float(p) for b, p in rows}
