"""Budgets: CRUD, evaluation against actual and forecast spend after each pipeline run, alert history, webhooks.

A budget is a scope (total, subscription, resource group, service, tag) narrowed by `filters` on more
dimensions (subscription, service, region, provider, tag:<key>; AND across, OR within), in its own currency.
A resource-group budget always names its subscription: group names repeat across subscriptions."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

import numpy as np
import requests
import sqlalchemy as sa

from backend.analytics.forecast import ForecastParams, backtest_origins, forecast_series
from backend.auth import Principal, Role, require
from backend.config import Settings
from backend.mart import budgets_sql
from backend.mart.audit import record
from backend.mart.budgets_sql import list_budgets, period_bounds
from backend.mart.notifications import delivery_summary
from backend.notify.channels import budget_channel
from backend.notify.dispatch import dispatch
from backend.notify.events import queue_budget_alert
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
    "filters",
)
FILTER_DIMENSIONS = (*budgets_sql.FILTER_DIMENSIONS, "tag:<key>")
TAG_PREFIX = budgets_sql.TAG_PREFIX
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
    if "filters" in out:
        out["filters"] = clean_filters(out["filters"])
    return out


def clean_filters(filters: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """{dimension: [values]} with known dimensions only, values trimmed, empty ones dropped (subscriptions are
    matched to the mart's ids when saved, see `_scope_checked`)."""
    out: dict[str, list[str]] = {}
    for name, values in (filters or {}).items():
        name = str(name).strip()
        if name.startswith(TAG_PREFIX):
            if not name[len(TAG_PREFIX) :].strip():
                raise ValueError("a tag filter needs its key, e.g. tag:team")
            name = TAG_PREFIX + name[len(TAG_PREFIX) :].strip()
        elif name not in budgets_sql.FILTER_DIMENSIONS:
            raise ValueError(f"a budget filters on {', '.join(FILTER_DIMENSIONS)}, not {name!r}")
        if isinstance(values, str):
            values = [values]
        kept = list(dict.fromkeys(str(v).strip() for v in values or () if str(v).strip()))
        if kept:
            out[name] = kept
    return out


def resolve_group_subscription(conn: sa.Connection, resource_group: str) -> str:
    """The one subscription holding a resource group of this name; ValueError naming the candidates when there
    are several (or none), since summing a name across subscriptions is what budgets must not do."""
    found = budgets_sql.group_subscriptions(conn, resource_group)
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(
            f"resource group {resource_group!r} exists in {len(found)} subscriptions ({', '.join(found)}):"
            " pick the subscription"
        )
    raise ValueError(f"no loaded subscription has a resource group {resource_group!r}: pick its subscription")


def _scope_checked(conn: sa.Connection, data: dict[str, Any]) -> None:
    """Resolve subscription names to ids and give a resource-group budget its one subscription (in `data`)."""
    filters = data.get("filters") or {}
    if filters.get("subscription"):
        subs = [_subscription_filter(conn, v) for v in filters["subscription"]]
        filters["subscription"] = list(dict.fromkeys(subs))
    if data.get("scope_type") == "subscription":
        data["scope_value"] = _resolve_subscription(conn, data.get("scope_value") or "")
    if data.get("scope_type") == "resource_group":
        subs = filters.get("subscription") or []
        if len(subs) > 1:
            raise ValueError("a resource group budget names one subscription (the group is in that one)")
        if not subs:
            filters["subscription"] = [resolve_group_subscription(conn, data.get("scope_value") or "")]
    data["filters"] = filters
    # Chosen now (or not a resource group at all): nothing left to ask the user.
    data["scope_candidates"] = None


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
    rows = budgets_sql.subscriptions(conn)
    if not rows or any(sub_id == value for sub_id, _ in rows):
        return value  # a known id, or no cost loaded yet to check against
    named = [sub_id for sub_id, name in rows if (name or "").strip().casefold() == value.strip().casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        raise ValueError(f"{len(named)} subscriptions are named {value!r}; enter the subscription id instead")
    known = ", ".join(sorted({name or sub_id for sub_id, name in rows})[:10])
    raise ValueError(f"no subscription has the id or name {value!r} (known: {known})")


def _subscription_filter(conn: sa.Connection, value: str) -> str:
    """A subscription filter's value as the mart's id: an id the mart holds as given (the page offers those),
    otherwise a typed guid in the ARM form or a name resolved to its one id."""
    return (
        value
        if budgets_sql.subscription_known(conn, value)
        else _resolve_subscription(conn, _subscription_member(value))
    )


def _audit_values(data: Mapping[str, Any]) -> dict[str, Any]:
    # The webhook URL may carry a token: the audit says it changed, never what it is.
    return {k: ("(set)" if v else "(cleared)") if k == "webhook_url" else v for k, v in data.items()}


def create_budget(engine: sa.Engine, *, actor: Principal, **values: Any) -> int:
    """A new budget; needs the editor role; audited with the actor in the same transaction."""
    require(actor, Role.editor, "Creating a budget")
    data = validate(values)
    with engine.begin() as conn:
        _scope_checked(conn, data)
        budget_id = budgets_sql.insert_budget(conn, data)
        record(conn, actor, "budget.create", f"budget {budget_id}", _audit_values(data))
        return budget_id


def update_budget(engine: sa.Engine, budget_id: int, *, actor: Principal, **values: Any) -> None:
    require(actor, Role.editor, "Changing a budget")
    data = validate(values)
    if not data:
        return
    with engine.begin() as conn:
        stored = budgets_sql.scope_for_update(conn, budget_id)
        if stored is None:
            raise LookupError(f"budget {budget_id} not found")
        if "scope_type" not in data and stored["scope_type"] == "subscription" and "scope_value" in data:
            data["scope_value"] = _subscription_member(data["scope_value"])
        # The scope is checked whole (a new group needs its subscription, a new subscription filter its id),
        # but only what changed is written, so an edit of the amount leaves an unresolved scope as it is.
        if {"scope_type", "scope_value", "filters"} & set(data):
            merged = {**dict(stored), **data}
            merged["filters"] = dict(merged.get("filters") or {})
            _scope_checked(conn, merged)
            data.update({k: merged[k] for k in ("scope_value", "filters", "scope_candidates")})
        n = budgets_sql.update_budget(conn, budget_id, data)
        if n:
            record(conn, actor, "budget.update", f"budget {budget_id}", _audit_values(data))
    if not n:
        raise LookupError(f"budget {budget_id} not found")


def delete_budget(engine: sa.Engine, budget_id: int, *, actor: Principal) -> None:
    """Deletes the budget; its alert history stays (budget_id set null, name kept)."""
    require(actor, Role.editor, "Deleting a budget")
    with engine.begin() as conn:
        name = budgets_sql.delete_budget(conn, budget_id)
        if name is not None:
            record(conn, actor, "budget.delete", f"budget {budget_id}", {"name": name})


def crossed(amount_spent: float, budget_amount: float, thresholds: list[float]) -> list[float]:
    """Thresholds (percent of budget) that the spend has reached."""
    return [t for t in thresholds if amount_spent >= budget_amount * t / 100.0]


def spend(conn, budget: Mapping[str, Any], start: date, end: date) -> float:
    """What the budget's scope and filters spent from start to end inclusive, in the budget's currency (the
    figure that alerts; the agent's budget_status reports the same)."""
    return budgets_sql.spend(conn, budget, start, end)


def scope_currencies(conn, budget: Mapping[str, Any], start: date, end: date) -> list[str]:
    """The billing currencies the budget's scope has cost in from start to end (whatever the budget's own)."""
    return budgets_sql.scope_currencies(conn, budget, start, end)


# Days of history a budget's forecast learns from: the forecaster's longest lookback (ETS window, 112 days) plus
# its backtest origins and calibration, with room for a quarter's horizon.
HISTORY_DAYS = 400


@dataclasses.dataclass(frozen=True)
class Outlook:
    """Where a budget's period is heading: spend to date, the forecast total with its interval, how good the
    forecast was on this budget's own history (backtest), and the first day the amount is (to be) passed."""

    spent: float
    forecast_total: float | None  # None: no forecast (history too short); `projected` is then the run rate
    lower: float | None
    upper: float | None
    method: str  # a forecast method, "actual" (the period is over) or "run_rate"
    backtest_metric: str | None
    backtest_error: float | None  # MAPE of the horizon's total, e.g. 0.08; None when no backtest was possible
    backtest_start: date | None
    backtest_end: date | None
    exceed_date: date | None  # None: not expected this period

    @property
    def projected(self) -> float:
        return self.forecast_total if self.forecast_total is not None else self.run_rate_total

    run_rate_total: float = 0.0


def outlook(
    days: list[tuple[date, Any]],
    *,
    history_start: date,
    as_of: date,
    period_start: date,
    period_end: date,
    amount: float,
    params: ForecastParams,
    stored: list | None = None,
) -> Outlook:
    """The budget's outlook from its daily spend `days` (history_start..as_of; missing days cost 0).

    `stored`: the analytics step's forecast rows of this very series (budgets_sql.analytics_forecast), used as
    they are so the Budgets page and the Overview tell the same forecast, with the backtest error stored with
    them. Without them, the analytics step's forecaster runs on the budget's own series (method chosen by
    backtest, horizon = the rest of the period up to params.horizon_days). Either is extended at its average
    daily rate beyond its horizon."""
    dates = np.array(
        [np.datetime64(history_start + timedelta(days=i)) for i in range((as_of - history_start).days + 1)]
    )
    values = np.zeros(len(dates))
    for day, cost in days:
        if history_start <= day <= as_of:
            values[(day - history_start).days] = float(cost)
    in_period = dates >= np.datetime64(period_start)
    spent = float(values[in_period].sum())
    elapsed = int(in_period.sum())
    remaining = (period_end - as_of).days
    total_days = (period_end - period_start).days + 1
    run_rate = spent / elapsed * total_days if elapsed else 0.0
    crossed_on = _first_crossing(dates[in_period], np.cumsum(values[in_period]), amount)
    common = {"spent": spent, "run_rate_total": run_rate}
    if remaining <= 0:
        return Outlook(**common, forecast_total=spent, lower=spent, upper=spent, method="actual",
                       backtest_metric=None, backtest_error=None, backtest_start=None, backtest_end=None,
                       exceed_date=crossed_on)  # fmt: skip
    future = np.array([np.datetime64(as_of + timedelta(days=i)) for i in range(1, remaining + 1)])
    if stored:
        return _stored_outlook(common, stored, future, spent, amount, crossed_on, history_start, params)
    horizon = min(remaining, params.horizon_days)
    # The method is chosen, and its error measured, on the horizon this budget needs.
    fparams = dataclasses.replace(params, horizon_days=horizon)
    fc = forecast_series(dates, values, fparams, horizon=horizon) if len(values) >= params.min_history_days else None
    if fc is None:
        daily = spent / elapsed if elapsed else 0.0
        path = spent + daily * np.arange(1, remaining + 1)
        exceed = crossed_on or _first_crossing(future, path, amount)
        return Outlook(**common, forecast_total=None, lower=None, upper=None, method="run_rate",
                       backtest_metric=None, backtest_error=None, backtest_start=None, backtest_end=None,
                       exceed_date=exceed)  # fmt: skip
    extra = remaining - horizon
    rate = float(fc.point.mean())
    path = spent + np.concatenate([np.cumsum(fc.point), float(fc.point.sum()) + rate * np.arange(1, extra + 1)])
    scale = remaining / horizon  # the interval of the horizon's total, stretched to the rest of the period
    origins = backtest_origins(len(values), fparams, horizon)
    error = fc.backtest_error if np.isfinite(fc.backtest_error) else None
    return Outlook(
        **common,
        forecast_total=float(path[-1]),
        lower=spent + float(fc.cum_lower[-1]) * scale,
        upper=spent + float(fc.cum_upper[-1]) * scale,
        method=fc.method,
        backtest_metric=f"mape_{horizon}d_total",
        backtest_error=error,
        backtest_start=_day(dates[origins.min()]) if error is not None and len(origins) else None,
        backtest_end=_day(dates[-1]) if error is not None and len(origins) else None,
        exceed_date=crossed_on or _first_crossing(future, path, amount),
    )


def _stored_outlook(common, stored, future, spent, amount, crossed_on, history_start, params) -> Outlook:
    """The outlook on the analytics step's own forecast of the series (see `outlook`)."""
    by_day = {np.datetime64(r.forecast_date): float(r.point) for r in stored}
    rate = sum(by_day.values()) / len(by_day)
    path = spent + np.cumsum([by_day.get(d, rate) for d in future])
    first = stored[0]
    error = None if first.backtest_error is None or not np.isfinite(first.backtest_error) else first.backtest_error
    start = end = None
    if error is not None:
        # The stored error's origins: weekly, the horizon's total each (backtest_metric "mape_<h>d_total"), the
        # last ending the day before the generation's first forecast day (forecast.backtest_origins).
        horizon = _metric_horizon(first.backtest_metric) or params.horizon_days
        end = first.first_date - timedelta(days=1)
        earliest = end - timedelta(days=horizon + 7 * (params.selection_origins - 1) - 1)
        start = max(earliest, history_start + timedelta(days=params.min_history_days))
    return Outlook(**common, forecast_total=float(path[-1]), lower=None, upper=None, method=first.method,
                   backtest_metric=first.backtest_metric, backtest_error=error, backtest_start=start,
                   backtest_end=end, exceed_date=crossed_on or _first_crossing(future, path, amount))  # fmt: skip


def _metric_horizon(metric: str | None) -> int | None:
    digits = (metric or "").removeprefix("mape_").removesuffix("d_total")
    return int(digits) if digits.isdigit() else None


def _day(value: np.datetime64) -> date:
    return value.astype("datetime64[D]").astype(date)


def _first_crossing(dates: np.ndarray, cumulative: np.ndarray, amount: float) -> date | None:
    over = np.flatnonzero(cumulative >= amount)
    return _day(dates[over[0]]) if len(over) else None


def budget_outlook(conn: sa.Connection, budget: Mapping[str, Any], *, as_of: date, params: ForecastParams) -> Outlook:
    """The outlook of the budget's period holding `as_of`, from its own filtered daily spend in its currency."""
    start, end = period_bounds(budget["period"], as_of)
    first = budgets_sql.first_cost_day(conn) or start
    history_start = min(start, max(first, as_of - timedelta(days=HISTORY_DAYS)))
    days = budgets_sql.daily_spend(conn, budget, history_start, as_of)
    stored = None
    if as_of < end and _one_analytics_series(budget):
        stored = budgets_sql.analytics_forecast(
            conn,
            scope_type=f"{TAG_PREFIX}{budget['tag_key']}" if budget["scope_type"] == "tag" else budget["scope_type"],
            scope_value=budget.get("scope_value") or "",
            metric=budget.get("metric") or "actual",
            currency=budget["currency"],
            after=as_of,
            end=end,
        )
    return outlook(
        days,
        stored=stored,
        history_start=history_start,
        as_of=as_of,
        period_start=start,
        period_end=end,
        amount=float(budget["amount"]),
        params=params,
    )


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
    stats = {
        "budgets": 0,
        "alerts": 0,
        "webhooks_delivered": 0,
        "webhooks_failed": 0,
        "budgets_other_currency": 0,
        "budgets_need_subscription": 0,
    }
    notify_settings = settings if settings is not None else _budget_webhooks_only()
    params = ForecastParams(
        horizon_days=notify_settings.forecast_horizon_days, interval_level=notify_settings.forecast_interval_level
    )
    queued: list[int] = []
    with engine.connect() as conn:
        if as_of is None:
            as_of = budgets_sql.last_cost_day(conn)
        if as_of is None:
            return stats
    for budget in list_budgets(engine, enabled_only=True):
        stats["budgets"] += 1
        if budget.get("scope_candidates") is not None:
            # A resource group budget from before groups were per subscription, whose name is in several (or
            # no) subscriptions: the Budgets page asks which; adding them all up is the bug this replaced.
            stats["budgets_need_subscription"] += 1
            log.warning(
                "budget %r is not evaluated: resource group %r is in subscriptions %s; pick one on the Budgets page",
                budget["name"],
                budget["scope_value"],
                ", ".join(budget["scope_candidates"]) or "(none loaded)",
            )
            continue
        start, end = period_bounds(budget["period"], as_of)
        amount = float(budget["amount"])
        with engine.connect() as conn:
            view = budget_outlook(conn, budget, as_of=min(as_of, end), params=params)
            spent = view.spent
            rest = None if view.forecast_total is None else view.forecast_total - spent
            others = [] if spent else scope_currencies(conn, budget, start, min(as_of, end))
        with engine.begin() as conn:
            budgets_sql.save_forecast(conn, _forecast_row(budget, view, start, end, min(as_of, end), run_id))
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
                    "filters": budget.get("filters") or {},
                    # None: not expected to be exceeded this period.
                    "exceed_date": view.exceed_date.isoformat() if view.exceed_date else None,
                    "forecast_method": view.method,
                    "backtest_error": view.backtest_error,
                    "backtest_window": _window(view),
                }
                # The alert and its notification commit together: a crash in between can neither lose the
                # notification nor send one for an alert that was never recorded.
                with engine.begin() as conn:
                    alert_id = budgets_sql.record_alert(conn, budget, start, kind, pct, value, run_id)
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


def _one_analytics_series(budget: Mapping[str, Any]) -> bool:
    """Whether the analytics step forecasts exactly this budget's scope (one level member, no more filters)."""
    return not budget.get("filters") and budget["scope_type"] in ("total", "subscription", "service", "tag")


def _window(view: Outlook) -> str | None:
    return f"{view.backtest_start}..{view.backtest_end}" if view.backtest_start else None


def _forecast_row(budget: Mapping[str, Any], view: Outlook, start: date, end: date, as_of: date, run_id) -> dict:
    return {
        "budget_id": budget["budget_id"],
        "period_start": start,
        "period_end": end,
        "as_of": as_of,
        "currency": budget["currency"],
        "spent": view.spent,
        "forecast_total": view.forecast_total,
        "lower_bound": view.lower,
        "upper_bound": view.upper,
        "method": view.method,
        "backtest_metric": view.backtest_metric,
        "backtest_error": view.backtest_error,
        "backtest_start": view.backtest_start,
        "backtest_end": view.backtest_end,
        "exceed_date": view.exceed_date,
        "run_id": run_id,
    }


def _budget_webhooks_only() -> Settings:
    # Defaults without reading the environment: no NOTIFY_* channel, only the budgets' own webhooks.
    return Settings.model_construct()
