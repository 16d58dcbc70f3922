"""Budgets: CRUD, evaluation against actual and forecast spend after each pipeline run, alert history, webhooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

import requests
import sqlalchemy as sa

from backend.auth import Principal, Role, require
from backend.auth.audit import record
from backend.config import Settings
from backend.notify.channels import budget_channel
from backend.notify.dispatch import dispatch
from backend.notify.events import queue_budget_alert
from backend.notify.store import delivery_summary
from backend.sources.ids import canonical_subscription_id

log = logging.getLogger(__name__)

SCOPES = ("total", "subscription", "resource_group", "service", "tag")
PERIODS = ("monthly", "quarterly", "yearly")
FIELDS = (
    "name",
    "scope_type",
    "scope_value",
    "tag_key",
    "metric",
    "amount",
    "currency",
    "period",
    "actual_thresholds",
    "forecast_thresholds",
    "webhook_url",
    "enabled",
)
# How each scope finds its members in the aggregate: dimension table, key, natural key.
SCOPE_DIM = {
    "subscription": ("dim_subscription", "subscription_key", "subscription_id"),
    "resource_group": ("dim_resource_group", "resource_group_key", "resource_group"),
    "service": ("dim_service", "service_key", "service_name"),
}

HttpPost = Callable[..., Any]


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: values[k] for k in FIELDS if k in values}
    if out.get("scope_type", "total") not in SCOPES:
        raise ValueError(f"scope_type must be one of {SCOPES}")
    if out.get("scope_type") == "subscription" and "scope_value" in out:
        out["scope_value"] = _subscription_member(out["scope_value"])
    if out.get("period", "monthly") not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}")
    if "amount" in out and not float(out["amount"]) > 0:
        raise ValueError("amount must be > 0")
    if out.get("scope_type") == "tag" and not out.get("tag_key"):
        raise ValueError("a tag budget needs tag_key")
    for key in ("actual_thresholds", "forecast_thresholds"):
        if key in out:
            out[key] = sorted(float(v) for v in out[key])
            if any(v <= 0 for v in out[key]):
                raise ValueError(f"{key} are percentages > 0")
    return out


def _subscription_member(value: Any) -> str:
    # Spend is found by mart.dim_subscription.subscription_id, which silver spells /subscriptions/<guid>:
    # a guid typed bare, braced or upper-case would otherwise match nothing and the budget never alert.
    return canonical_subscription_id(None if value is None else str(value)) or ""


def _resolve_subscription(conn: sa.Connection, value: str) -> str:
    """A subscription budget's scope_value as mart.dim_subscription.subscription_id: an id stays, a display name
    becomes the id of the one subscription carrying it. People think in names ("Production"); spend is found by
    id, so a name stored as it is would match nothing and the budget would never alert."""
    if not value:
        return value
    rows = conn.execute(
        # '' is the dimension's "unknown" member, not a subscription anyone can mean.
        sa.text("SELECT subscription_id, subscription_name FROM mart.dim_subscription WHERE subscription_id <> ''")
    ).all()
    if not rows or any(sub_id == value for sub_id, _ in rows):
        return value  # a known id, or no cost loaded yet to check against
    named = [sub_id for sub_id, name in rows if (name or "").strip().casefold() == value.strip().casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        raise ValueError(f"{len(named)} subscriptions are named {value!r}; enter the subscription id instead")
    known = ", ".join(sorted({name or sub_id for sub_id, name in rows})[:10])
    raise ValueError(f"no subscription has the id or name {value!r} (known: {known})")


def _audit_values(data: Mapping[str, Any]) -> dict[str, Any]:
    # The webhook URL may carry a token: the audit says it changed, never what it is.
    return {k: ("(set)" if v else "(cleared)") if k == "webhook_url" else v for k, v in data.items()}


def create_budget(engine: sa.Engine, *, actor: Principal, **values: Any) -> int:
    """A new budget; needs the editor role; audited with the actor in the same transaction."""
    require(actor, Role.editor, "Creating a budget")
    data = validate(values)
    cols = ", ".join(data)
    with engine.begin() as conn:
        if data.get("scope_type") == "subscription":
            data["scope_value"] = _resolve_subscription(conn, data.get("scope_value") or "")
        budget_id = conn.execute(
            sa.text(
                f"INSERT INTO mart.budgets ({cols}) VALUES ({', '.join(':' + k for k in data)}) RETURNING budget_id"
            ),
            data,
        ).scalar_one()
        record(conn, actor, "budget.create", f"budget {budget_id}", _audit_values(data))
        return budget_id


def update_budget(engine: sa.Engine, budget_id: int, *, actor: Principal, **values: Any) -> None:
    require(actor, Role.editor, "Changing a budget")
    data = validate(values)
    if not data:
        return
    with engine.begin() as conn:
        scope_type = data.get("scope_type")
        if scope_type is None and "scope_value" in data:
            # The stored scope decides whether the new member is a subscription to resolve to its id.
            scope_type = conn.execute(
                sa.text("SELECT scope_type FROM mart.budgets WHERE budget_id = :id FOR UPDATE"), {"id": budget_id}
            ).scalar_one_or_none()
            if scope_type == "subscription":
                data["scope_value"] = _subscription_member(data["scope_value"])
        if scope_type == "subscription" and "scope_value" in data:
            data["scope_value"] = _resolve_subscription(conn, data["scope_value"])
        sets = ", ".join(f"{k} = :{k}" for k in data)
        n = conn.execute(
            sa.text(f"UPDATE mart.budgets SET {sets}, updated_at = now() WHERE budget_id = :id"),
            {**data, "id": budget_id},
        ).rowcount
        if n:
            record(conn, actor, "budget.update", f"budget {budget_id}", _audit_values(data))
    if not n:
        raise LookupError(f"budget {budget_id} not found")


def delete_budget(engine: sa.Engine, budget_id: int, *, actor: Principal) -> None:
    """Deletes the budget; its alert history stays (budget_id set null, name kept)."""
    require(actor, Role.editor, "Deleting a budget")
    with engine.begin() as conn:
        name = conn.execute(
            sa.text("DELETE FROM mart.budgets WHERE budget_id = :id RETURNING name"), {"id": budget_id}
        ).scalar_one_or_none()
        if name is not None:
            record(conn, actor, "budget.delete", f"budget {budget_id}", {"name": name})


def get_budget(engine: sa.Engine, budget_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM mart.budgets WHERE budget_id = :id"), {"id": budget_id}).mappings()
        found = row.one_or_none()
    return dict(found) if found else None


def list_budgets(engine: sa.Engine, *, enabled_only: bool = False) -> list[dict[str, Any]]:
    where = " WHERE enabled" if enabled_only else ""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM mart.budgets{where} ORDER BY name")).mappings()]


def period_bounds(period: str, day: date) -> tuple[date, date]:
    """First and last day (inclusive) of the budget period containing `day`."""
    if period == "monthly":
        start = day.replace(day=1)
        months = 1
    elif period == "quarterly":
        start = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        months = 3
    elif period == "yearly":
        start, months = date(day.year, 1, 1), 12
    else:
        raise ValueError(period)
    year, month = divmod(start.month - 1 + months, 12)
    return start, date(start.year + year, month + 1, 1) - timedelta(days=1)


def crossed(amount_spent: float, budget_amount: float, thresholds: list[float]) -> list[float]:
    """Thresholds (percent of budget) that the spend has reached."""
    return [t for t in thresholds if amount_spent >= budget_amount * t / 100.0]


def spend(conn, budget: Mapping[str, Any], start: date, end: date) -> float:
    """What the budget's scope spent from start to end inclusive, in the budget's currency (the figure that alerts;
    the agent's budget_status reports the same)."""
    col = "amortized_cost" if budget["metric"] == "amortized" else "actual_cost"
    params: dict[str, Any] = {"start": start, "end": end, "cur": budget["currency"], "sv": budget["scope_value"]}
    cur = "a.currency_key = (SELECT currency_key FROM mart.dim_currency WHERE currency_code = :cur)"
    if budget["scope_type"] == "tag":
        params["tk"] = budget["tag_key"]
        sql = f"""SELECT coalesce(sum(a.{col}), 0) FROM mart.agg_cost_by_tag a WHERE a.charge_date BETWEEN :start
                  AND :end AND {cur} AND a.tag_key = :tk AND a.tag_value = :sv"""
    elif budget["scope_type"] == "total":
        sql = f"SELECT coalesce(sum(a.{col}), 0) FROM mart.agg_cost_daily a WHERE a.charge_date BETWEEN :start AND :end AND {cur}"
    else:
        table, key, natural = SCOPE_DIM[budget["scope_type"]]
        sql = f"""SELECT coalesce(sum(a.{col}), 0) FROM mart.agg_cost_daily a WHERE a.charge_date BETWEEN :start
                  AND :end AND {cur} AND a.{key} IN (SELECT {key} FROM mart.{table} WHERE {natural} = :sv)"""
    return float(conn.execute(sa.text(sql), params).scalar_one())


def scope_currencies(conn, budget: Mapping[str, Any], start: date, end: date) -> list[str]:
    """The billing currencies the budget's scope has cost in from start to end (whatever the budget's own)."""
    params: dict[str, Any] = {"start": start, "end": end, "sv": budget["scope_value"]}
    if budget["scope_type"] == "tag":
        params["tk"] = budget["tag_key"]
        table, where = "mart.agg_cost_by_tag", " AND a.tag_key = :tk AND a.tag_value = :sv"
    elif budget["scope_type"] == "total":
        table, where = "mart.agg_cost_daily", ""
    else:
        dim, key, natural = SCOPE_DIM[budget["scope_type"]]
        table, where = "mart.agg_cost_daily", f" AND a.{key} IN (SELECT {key} FROM mart.{dim} WHERE {natural} = :sv)"
    sql = f"""SELECT DISTINCT c.currency_code FROM {table} a JOIN mart.dim_currency c USING (currency_key)
              WHERE a.charge_date BETWEEN :start AND :end{where} ORDER BY 1"""
    return list(conn.execute(sa.text(sql), params).scalars())


def _forecast_rest(conn, budget: Mapping[str, Any], after: date, end: date) -> float | None:
    """Forecast spend from the day after `after` to `end` from the latest forecast generation of the scope in the
    budget's currency (forecasts are per currency; a row without one summed several and is never used)."""
    scope_type = f"tag:{budget['tag_key']}" if budget["scope_type"] == "tag" else budget["scope_type"]
    row = conn.execute(
        sa.text(
            """
            WITH latest AS (SELECT max(generated_at) AS g FROM mart.forecasts
                            WHERE scope_type = :st AND scope_value = :sv AND metric = :m AND currency = :cur)
            SELECT count(*), coalesce(sum(point), 0), max(forecast_date) FROM mart.forecasts f, latest
            WHERE f.scope_type = :st AND f.scope_value = :sv AND f.metric = :m AND f.currency = :cur
              AND f.generated_at = latest.g AND f.forecast_date > :after AND f.forecast_date <= :end"""
        ),
        {
            "st": scope_type,
            "sv": budget["scope_value"],
            "m": budget["metric"],
            "cur": budget["currency"],
            "after": after,
            "end": end,
        },
    ).one()
    count, total, last = row
    if not count:
        return None
    # Beyond the forecast horizon (quarter / year budgets), extend at the forecast's average daily rate.
    missing = (end - last).days if last < end else 0
    return float(total) + float(total) / count * missing


def evaluate_budgets(
    engine: sa.Engine,
    *,
    run_id: str,
    as_of: date | None = None,
    http_post: HttpPost = requests.post,
    retries: int = 3,
    timeout: float = 5.0,
    backoff: float = 0.5,
    settings: Settings | None = None,
) -> dict[str, int]:
    """Compare every enabled budget's period spend (actual) and spend + forecast with its thresholds; record each
    newly crossed threshold once per period (alert history) and send it to the notification channels that take
    budget alerts and to the budget's own webhook if any (backend/notify: recorded, retried at later runs).

    `retries` / `timeout` / `backoff` are the budget webhook's tries within this run; `http_post` its transport.
    Without `settings` only the budgets' own webhooks are sent to (the NOTIFY_* channels need the settings).

    Spend and forecast are the scope's cost in the budget's currency only; cost in other currencies is never
    converted or added. A budget whose scope has cost only in other currencies is counted in
    `budgets_other_currency` and logged, since it can never alert."""
    stats = {"budgets": 0, "alerts": 0, "webhooks_delivered": 0, "webhooks_failed": 0, "budgets_other_currency": 0}
    notify_settings = settings if settings is not None else _budget_webhooks_only()
    queued: list[int] = []
    with engine.connect() as conn:
        if as_of is None:
            as_of = conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()
        if as_of is None:
            return stats
    for budget in list_budgets(engine, enabled_only=True):
        stats["budgets"] += 1
        start, end = period_bounds(budget["period"], as_of)
        amount = float(budget["amount"])
        with engine.connect() as conn:
            spent = spend(conn, budget, start, min(as_of, end))
            rest = _forecast_rest(conn, budget, as_of, end) if as_of < end else 0.0
            others = [] if spent else scope_currencies(conn, budget, start, min(as_of, end))
        if others and budget["currency"] not in others:
            stats["budgets_other_currency"] += 1
            log.warning(
                "budget %r is in %s but its scope's cost this period is in %s only: it is not converted, so the"
                " budget cannot alert",
                budget["name"],
                budget["currency"],
                ", ".join(others),
            )
        checks = [("actual", spent, [float(t) for t in budget["actual_thresholds"]])]
        if rest is not None:
            checks.append(("forecast", spent + rest, [float(t) for t in budget["forecast_thresholds"]]))
        for kind, value, thresholds in checks:
            for pct in crossed(value, amount, thresholds):
                payload = {
                    "budget": budget["name"],
                    "budget_id": budget["budget_id"],
                    "scope_type": budget["scope_type"],
                    "scope_value": budget["scope_value"],
                    "period": budget["period"],
                    "period_start": start.isoformat(),
                    "threshold_type": kind,
                    "threshold_pct": pct,
                    "amount": round(value, 2),
                    "budget_amount": amount,
                    "currency": budget["currency"],
                    "as_of": as_of.isoformat(),
                    "run_id": run_id,
                }
                # The alert and its notification commit together: a crash in between can neither lose the
                # notification nor send one for an alert that was never recorded.
                with engine.begin() as conn:
                    alert_id = _record_alert(conn, budget, start, kind, pct, value, run_id)
                    if alert_id is None:
                        continue  # already alerted for this threshold in this period
                    stats["alerts"] += 1
                    own = budget.get("webhook_url")
                    channel = budget_channel(budget["budget_id"], budget["name"], own) if own else None
                    event_id = queue_budget_alert(
                        conn, notify_settings, {**payload, "alert_id": alert_id}, own=channel, run_id=run_id
                    )
                if event_id is not None:
                    queued.append(event_id)
    if queued:
        dispatch(
            engine,
            notify_settings,
            event_ids=queued,
            http_post=http_post,
            budget_retries=retries,
            budget_timeout=timeout,
            pause_s=backoff,
        )
        with engine.connect() as conn:
            stats.update(delivery_summary(conn, queued))
    log.info("budgets evaluated as of %s: %s", as_of, stats)
    return stats


def _budget_webhooks_only() -> Settings:
    # Defaults without reading the environment: no NOTIFY_* channel, only the budgets' own webhooks.
    return Settings.model_construct()


def _record_alert(conn: sa.Connection, budget, start, kind, pct, value, run_id) -> int | None:
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
