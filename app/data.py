"""Adapters between the pages and the backend (mart queries, analytics, budgets, reconciliation); no SQL in pages/.

Every function takes an engine first, so pages pass the cached reader (or the owner, for writes and
for tables the reader role cannot see) and tests pass their own. Caching lives in app/ui.py, keyed by
the mart's data version. Where the backend has no reader yet (run history, anomaly list and feedback,
budget burn and alert history, month-end forecast totals) the SQL below is the stop-gap, kept small and
on the same tables and semantics the backend writes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
import sqlalchemy as sa

from backend.analytics import budgets as budget_store
from backend.mart import queries, reconcile
from backend.mart.model import BY_NAME

log = logging.getLogger(__name__)

METRICS = ("actual", "amortized")
GRAINS = ("daily", "weekly", "monthly")
# Links shared before the backend grains existed said day / week / month.
GRAIN_ALIASES = {"day": "daily", "week": "weekly", "month": "monthly"}
TAG_PREFIX = queries.TAG_PREFIX
DIMENSIONS = tuple(queries.dimensions())
_TITLES = {"resource_group": "Resource group", "pricing_model": "Pricing model",
           "charge_category": "Charge category", "billing_account": "Billing account"}  # fmt: skip


def title(name: str) -> str:
    """How a dimension (or "tag:<key>") is named on screen."""
    if name.startswith(TAG_PREFIX):
        return f"Tag: {name[len(TAG_PREFIX) :]}"
    return _TITLES.get(name, name.replace("_", " ").capitalize())


def to_grain(name: str) -> str:
    """A backend grain from what a page or a shared link says ("week" or "weekly")."""
    value = GRAIN_ALIASES.get(name, name)
    if value not in GRAINS:
        raise ValueError(f"unknown grain {name!r}: use one of {GRAINS}")
    return value


def _df(conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    result = conn.execute(sa.text(sql), dict(params or {}))
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for col in frame.columns:
        # numeric -> Decimal; the pages chart and format floats.
        present = frame[col].dropna() if frame[col].dtype == object else ()
        if len(present) and isinstance(present.iloc[0], Decimal):
            frame[col] = frame[col].astype(float)
    return frame


def _currency(currency: str | None) -> dict[str, list[str]]:
    return {"currency": [currency]} if currency else {}


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def month_end(day: dt.date) -> dt.date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def previous_month_same_day(day: dt.date) -> tuple[dt.date, dt.date]:
    """The previous month's first day and the same day-of-month (clamped to that month's end)."""
    prev_end = month_start(day) - dt.timedelta(days=1)
    return month_start(prev_end), prev_end.replace(day=min(day.day, prev_end.day))


# --- freshness ----------------------------------------------------------------------------------------


@dataclass
class DataStatus:
    """What the mart holds: the charge-day span, the last successful load and run (cache key), currencies."""

    first_date: dt.date | None = None
    as_of: dt.date | None = None
    last_loaded_at: dt.datetime | None = None
    last_run_id: str | None = None
    last_run_at: dt.datetime | None = None
    currencies: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.as_of is None

    @property
    def version(self) -> str:
        """Changes whenever a load or run succeeds: part of every cache key so caches never go stale."""
        return f"{self.last_loaded_at}:{self.last_run_id}"


def data_status(engine: sa.Engine) -> DataStatus:
    fresh = queries.freshness(engine)
    status = DataStatus(as_of=fresh.data_as_of, last_loaded_at=fresh.last_successful_load_at)
    if fresh.fact_months:
        status.first_date = dt.date.fromisoformat(f"{fresh.fact_months[0]}-01")
    run = latest_run(engine, status="succeeded")
    if run:
        status.last_run_id, status.last_run_at = run["run_id"], run["finished_at"]
    if status.as_of is not None and status.first_date is not None:
        # Whole months, so the query reads the small monthly aggregate; the biggest currency comes first.
        by = queries.cost_breakdown(
            engine, start=status.first_date, end=month_end(status.as_of), group_by="currency", grain="monthly"
        )
        status.currencies = by.groupby("group")["cost"].sum().abs().sort_values(ascending=False).index.tolist()
    return status


def mart_freshness(engine: sa.Engine) -> pd.DataFrame:
    """Per mart area: the latest data day and when it was last written."""
    fresh = queries.freshness(engine)
    cost = pd.DataFrame(
        [
            {
                "area": "cost (fact + aggregates)",
                "latest": str(fresh.data_as_of or ""),
                "written_at": fresh.last_successful_load_at,
                "note": f"last load {fresh.last_load_status or 'never'}; months {', '.join(fresh.fact_months[-3:])}",
            }
        ]
    )
    sql = """
        SELECT 'anomalies' AS area, max(charge_date)::text AS latest, max(detected_at) AS written_at FROM mart.anomalies
        UNION ALL SELECT 'forecasts', max(forecast_date)::text, max(generated_at) FROM mart.forecasts
        UNION ALL SELECT 'month-end forecasts', max(period_end)::text, max(generated_at) FROM mart.forecast_totals
        UNION ALL SELECT 'budget alerts', max(period_start)::text, max(triggered_at) FROM mart.budget_alerts"""
    with engine.connect() as conn:
        analytics = _df(conn, sql)
    return pd.concat([cost, analytics.assign(note="")], ignore_index=True)


# --- explorer -----------------------------------------------------------------------------------------


def dimension_values(engine: sa.Engine, name: str, *, limit: int = 500) -> list[str]:
    return queries.dimension_values(engine, name, limit=limit)


def tag_keys(engine: sa.Engine) -> list[str]:
    return queries.tag_keys(engine)


def cost_by(
    engine: sa.Engine,
    *,
    group_by: str,
    start: dt.date,
    end: dt.date,
    grain: str = "daily",
    metric: str = "actual",
    filters: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Cost per period and group: columns period (datetime64), group, currency, cost (float), cost_exact."""
    frame = queries.cost_breakdown(
        engine,
        start=start,
        end=end,
        group_by=group_by,
        grain=to_grain(grain),
        metric=metric,
        filters={k: list(v) for k, v in (filters or {}).items() if v},
    )
    frame["period"] = pd.to_datetime(frame["period"])
    return frame


def daily_total(
    engine: sa.Engine, *, start: dt.date, end: dt.date, metric: str = "actual", currency: str | None = None
) -> pd.DataFrame:
    """Total cost per day: columns day (datetime64), cost (float)."""
    frame = queries.time_series(engine, start=start, end=end, metric=metric, filters=_currency(currency))
    out = frame.groupby("period", as_index=False)["cost"].sum().rename(columns={"period": "day"})
    out["day"] = pd.to_datetime(out["day"])
    return out


# --- overview -----------------------------------------------------------------------------------------


def kpis(engine: sa.Engine, *, as_of: dt.date, currency: str | None, metric: str = "actual") -> queries.Kpis:
    """Month to date vs the same point last month, in one currency (sums never mix currencies)."""
    return queries.kpis(engine, metric=metric, as_of=as_of, filters=_currency(currency))


@dataclass(frozen=True)
class MonthEndForecast:
    """The analytics step's month-end total (actual to date + forecast of the rest) with its own interval."""

    period_start: dt.date
    period_end: dt.date
    actual_to_date: float
    point: float
    lower: float | None
    upper: float | None
    interval_level: float | None
    method: str
    as_of: dt.date
    generated_at: dt.datetime
    currency: str | None  # None: the estate had several currencies and analytics summed them


def month_end_forecast(
    engine: sa.Engine, *, as_of: dt.date, metric: str = "actual", currency: str | None = None
) -> MonthEndForecast | None:
    """The latest mart.forecast_totals month-end row for the total of the month holding `as_of` (None if there is
    none yet, or only one in another currency). Stop-gap: backend.analytics has no reader for forecast_totals."""
    sql = """
        SELECT period_start, period_end, actual_to_date, point, lower_bound, upper_bound, interval_level, method,
               as_of, generated_at, currency
        FROM mart.forecast_totals
        WHERE scope_type = 'total' AND scope_value = '' AND metric = :metric AND period = 'month_end'
          AND period_start = :start AND (currency IS NULL OR CAST(:cur AS text) IS NULL OR currency = :cur)
        ORDER BY generated_at DESC LIMIT 1"""
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql), {"metric": metric, "start": month_start(as_of), "cur": currency}).first()
    if row is None:
        return None

    def num(value: Any) -> float | None:
        return None if value is None else float(value)

    return MonthEndForecast(
        row.period_start, row.period_end, float(row.actual_to_date), float(row.point), num(row.lower_bound),
        num(row.upper_bound), num(row.interval_level), row.method, row.as_of, row.generated_at, row.currency,
    )  # fmt: skip


def top_movers(
    engine: sa.Engine,
    *,
    as_of: dt.date,
    currency: str | None,
    dimension: str = "service",
    days: int = 7,
    metric: str = "actual",
    limit: int = 5,
) -> pd.DataFrame:
    """The last `days` days vs the `days` before: group, current_cost, previous_cost, change, change_pct (%)."""
    current = (as_of - dt.timedelta(days=days - 1), as_of)
    previous = (current[0] - dt.timedelta(days=days), current[0] - dt.timedelta(days=1))
    frame = queries.top_movers(
        engine,
        dimension=dimension,
        current=current,
        previous=previous,
        metric=metric,
        filters=_currency(currency),
        limit=limit,
    )
    frame["change_pct"] = frame["change_pct"] * 100
    return frame


# --- anomalies (stop-gap: backend.analytics.store writes them but has no reader or feedback writer) -----


def anomalies(engine: sa.Engine, *, status: str | None = "open", since: dt.date | None = None) -> pd.DataFrame:
    params: dict[str, Any] = {"status": status, "since": since}
    sql = """
        SELECT anomaly_id, charge_date, level, dimension_value, metric, kind, severity, actual, expected,
               lower_bound, upper_bound, impact, currency, contributors, status, feedback, detected_at, method
        FROM mart.anomalies
        WHERE (CAST(:status AS text) IS NULL OR status = :status)
          AND (CAST(:since AS date) IS NULL OR charge_date >= :since)
        ORDER BY charge_date DESC, severity DESC NULLS LAST
        LIMIT 1000"""
    with engine.connect() as conn:
        frame = _df(conn, sql, params)
    if not frame.empty:
        frame["dimension_value"] = frame["dimension_value"].replace("", "(none)")
    return frame


# How an anomaly level's member (its natural key, as analytics stores it) is found in the aggregate.
_LEVEL_KEYS = {
    "subscription": ("dim_subscription", "subscription_key", "subscription_id"),
    "resource_group": ("dim_resource_group", "resource_group_key", "resource_group"),
    "service": ("dim_service", "service_key", "service_name"),
    "region": ("dim_region", "region_key", "region"),
}


def series_for(engine: sa.Engine, *, level: str, value: str, metric: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """The daily series an anomaly was found in: columns day, cost."""
    if level == "total" or level.startswith(TAG_PREFIX):
        # Tag values are their own labels, so the typed query answers these two directly.
        filters = {level: [value or queries.UNTAGGED]} if level.startswith(TAG_PREFIX) else {}
        frame = queries.time_series(engine, start=start, end=end, metric=metric, filters=filters)
        out = frame.groupby("period", as_index=False)["cost"].sum().rename(columns={"period": "day"})
        out["day"] = pd.to_datetime(out["day"])
        return out
    if level not in _LEVEL_KEYS:
        return pd.DataFrame({"day": [], "cost": []})
    table, key, column = _LEVEL_KEYS[level]
    col = queries._metric(metric)
    sql = (
        f"SELECT charge_date AS day, sum({col}) AS cost FROM mart.agg_cost_daily a"
        f" WHERE a.{key} IN (SELECT {key} FROM mart.{table} WHERE {column} = :v)"
        " AND a.charge_date BETWEEN :start AND :end GROUP BY 1 ORDER BY 1"
    )
    with engine.connect() as conn:
        frame = _df(conn, sql, {"v": value, "start": start, "end": end})
    if not frame.empty:
        frame["day"] = pd.to_datetime(frame["day"])
    return frame


def anomaly_band(engine: sa.Engine, *, level: str, value: str, metric: str) -> pd.DataFrame:
    """Every detection stored for one series (expected value and band per day), for the chart."""
    sql = """
        SELECT charge_date AS day, expected, lower_bound, upper_bound, actual, severity, status, kind
        FROM mart.anomalies WHERE level = :l AND dimension_value = :v AND metric = :m ORDER BY charge_date"""
    with engine.connect() as conn:
        frame = _df(conn, sql, {"l": level, "v": "" if value == "(none)" else value, "m": metric})
    if not frame.empty:
        frame["day"] = pd.to_datetime(frame["day"])
    return frame


def set_anomaly_status(
    owner: sa.Engine, anomaly_id: int, *, verdict: str, note: str = "", user: str | None = None, suppress_days: int = 0
) -> int:
    """Mark an anomaly expected / resolved / reopened and record the feedback the analytics step reads back
    (backend.analytics.store.read_feedback: 'expected' verdicts suppress the same pattern)."""
    if verdict not in ("expected", "resolved", "reopened"):
        raise ValueError(f"unknown verdict {verdict!r}")
    status = "open" if verdict == "reopened" else verdict
    with owner.begin() as conn:
        row = conn.execute(
            sa.text(
                "UPDATE mart.anomalies SET status = :s, feedback = :note, updated_at = now() WHERE anomaly_id = :id"
                " RETURNING level, dimension_value, kind, charge_date"
            ),
            {"s": status, "note": note or None, "id": anomaly_id},
        ).one_or_none()
        if row is None:
            raise LookupError(f"anomaly {anomaly_id} not found")
        conn.execute(
            sa.text(
                "INSERT INTO mart.anomaly_feedback (anomaly_id, level, dimension_value, kind, verdict, note, created_by,"
                " suppress_until) VALUES (:id, :l, :v, :k, :verdict, :note, :user, :until)"
            ),
            {
                "id": anomaly_id,
                "l": row.level,
                "v": row.dimension_value,
                "k": row.kind,
                "verdict": verdict,
                "note": note or None,
                "user": user,
                "until": row.charge_date + dt.timedelta(days=suppress_days) if suppress_days else None,
            },
        )
    return anomaly_id


def contributors_frame(contributors: Any) -> pd.DataFrame:
    if isinstance(contributors, str):
        contributors = json.loads(contributors or "[]")
    return pd.DataFrame(list(contributors or []))


# --- budgets: CRUD and periods from backend.analytics.budgets ------------------------------------------

BUDGET_SCOPES = budget_store.SCOPES
BUDGET_PERIODS = budget_store.PERIODS
period_bounds = budget_store.period_bounds


class BudgetError(ValueError):
    """A budget the user must fix (message is shown as is)."""


def _form_problem(values: Mapping[str, Any]) -> str | None:
    """What a person typed wrong, in their words; backend.analytics.budgets.validate stays the authority."""
    name = str(values.get("name") or "").strip()
    scope = values.get("scope_type") or "total"
    if not name:
        return "Give the budget a name."
    if len(name) > 120:
        return "Keep the name under 120 characters."
    if scope != "total" and not str(values.get("scope_value") or "").strip():
        return f"Pick the {scope.replace('_', ' ')} this budget covers (the scope value)."
    if scope == "tag" and not str(values.get("tag_key") or "").strip():
        return "Pick the tag key for a tag budget."
    try:
        amount = float(values.get("amount") or 0)
    except (TypeError, ValueError):
        return "The amount must be a number."
    if amount <= 0:
        return "The amount must be greater than zero."
    if len(str(values.get("currency") or "").strip()) != 3:
        return "Currency must be a 3-letter code such as EUR or USD."
    if not values.get("actual_thresholds"):
        return "Pick at least one alert threshold."
    return None


def _budget_values(values: Mapping[str, Any]) -> dict[str, Any]:
    if problem := _form_problem(values):
        raise BudgetError(problem)
    scope = values.get("scope_type") or "total"
    clean = {
        "name": str(values["name"]).strip(),
        "scope_type": scope,
        "scope_value": "" if scope == "total" else str(values["scope_value"]).strip(),
        "tag_key": str(values.get("tag_key") or "").strip() if scope == "tag" else None,
        "metric": values.get("metric") or "actual",
        "amount": float(values["amount"]),
        "currency": str(values["currency"]).strip().upper(),
        "period": values.get("period") or "monthly",
        "actual_thresholds": list(values["actual_thresholds"]),
        "forecast_thresholds": list(values.get("forecast_thresholds") or [100]),
        "enabled": bool(values.get("enabled", True)),
    }
    if values.get("webhook_url"):  # empty on edit = keep the stored one (the page never shows it)
        clean["webhook_url"] = str(values["webhook_url"]).strip()
    return clean


def _budget_call(fn, *args: Any, values: dict[str, Any]) -> Any:
    name = values["name"]
    try:
        return fn(*args, **values)
    except sa.exc.IntegrityError as exc:
        if "budgets_name_key" in str(exc.orig) or "unique" in str(exc.orig).lower():
            raise BudgetError(f"A budget named {name!r} already exists; pick another name.") from exc
        raise BudgetError(f"The database refused this budget: {str(exc.orig).splitlines()[0]}") from exc
    except LookupError as exc:
        raise BudgetError(f"Budget {name!r} no longer exists.") from exc
    except ValueError as exc:
        raise BudgetError(f"This budget is not valid: {exc}.") from exc


def list_budgets(owner: sa.Engine) -> pd.DataFrame:
    """Every budget (owner engine: backend list_budgets reads webhook_url, which the reader may not see);
    the webhook URL is replaced by whether one is set, since it may carry a token."""
    rows = budget_store.list_budgets(owner)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["budget_id", "name", "scope_type", "scope_value", "tag_key", "metric", "amount",
                                     "currency", "period", "actual_thresholds", "forecast_thresholds", "enabled",
                                     "has_webhook"])  # fmt: skip
    frame["has_webhook"] = frame.pop("webhook_url").notna() if "webhook_url" in frame else False
    frame["amount"] = frame["amount"].astype(float)
    return frame


def create_budget(owner: sa.Engine, values: Mapping[str, Any]) -> int:
    clean = _budget_values(values)
    return _budget_call(budget_store.create_budget, owner, values=clean)


def update_budget(owner: sa.Engine, budget_id: int, values: Mapping[str, Any]) -> int:
    clean = _budget_values(values)
    _budget_call(budget_store.update_budget, owner, budget_id, values=clean)
    return budget_id


def delete_budget(owner: sa.Engine, budget_id: int) -> int:
    budget_store.delete_budget(owner, budget_id)
    return budget_id


def budget_burn(engine: sa.Engine, budget: Mapping[str, Any], *, as_of: dt.date) -> pd.DataFrame:
    """Spend per day of the budget's current period and the running total: day, cost, cumulative. Stop-gap for
    a backend reader; scopes match members exactly as backend.analytics.budgets does (natural key)."""
    start, end = period_bounds(budget["period"], as_of)
    params: dict[str, Any] = {"start": start, "end": min(end, as_of), "cur": budget["currency"]}
    params["sv"] = budget.get("scope_value") or ""
    scope = budget["scope_type"]
    if scope == "tag":
        params["tk"] = budget.get("tag_key") or ""
        table, where = "mart.agg_cost_by_tag", " AND a.tag_key = :tk AND a.tag_value = :sv"
    elif scope == "total":
        table, where = "mart.agg_cost_daily", ""
    else:
        dim, key, natural = budget_store.SCOPE_DIM[scope]
        table, where = "mart.agg_cost_daily", f" AND a.{key} IN (SELECT {key} FROM mart.{dim} WHERE {natural} = :sv)"
    col = queries._metric(budget.get("metric") or "actual")
    sql = f"""
        SELECT a.charge_date AS day, sum(a.{col}) AS cost FROM {table} a
        WHERE a.charge_date BETWEEN :start AND :end
          AND a.currency_key = (SELECT currency_key FROM mart.dim_currency WHERE currency_code = :cur) {where}
        GROUP BY 1 ORDER BY 1"""
    with engine.connect() as conn:
        frame = _df(conn, sql, params)
    if frame.empty:
        return pd.DataFrame({"day": [], "cost": [], "cumulative": []})
    frame["day"] = pd.to_datetime(frame["day"])
    frame["cumulative"] = frame["cost"].cumsum()
    return frame


def budget_alerts(engine: sa.Engine, *, limit: int = 200) -> pd.DataFrame:
    """The alert history the budgets step records (stop-gap reader)."""
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT triggered_at, budget_name, period_start, threshold_type, threshold_pct, amount_at_alert,"
            " budget_amount, currency, webhook_status, webhook_error FROM mart.budget_alerts"
            " ORDER BY triggered_at DESC LIMIT :n",
            {"n": limit},
        )


# --- pipeline runs (stop-gap: backend.pipeline.runs records them but has no reader) --------------------


def runs(engine: sa.Engine, *, limit: int = 50) -> pd.DataFrame:
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT run_id, trigger, status, started_at, finished_at, rows_in, rows_out, error,"
            " extract(epoch FROM coalesce(finished_at, now()) - started_at) AS seconds"
            " FROM ops.pipeline_runs ORDER BY started_at DESC LIMIT :n",
            {"n": limit},
        )


def run_steps(engine: sa.Engine, run_id: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT step, ordinal, status, started_at, finished_at, rows_in, rows_out, error, detail,"
            " extract(epoch FROM coalesce(finished_at, CASE WHEN started_at IS NOT NULL THEN now() END)"
            " - started_at) AS seconds FROM ops.pipeline_steps WHERE run_id = :r ORDER BY ordinal",
            {"r": run_id},
        )


def run_logs(owner: sa.Engine, run_id: str, *, limit: int = 500) -> pd.DataFrame:
    """Log lines of one run; ops.pipeline_logs is not granted to the reader, so this takes the owner."""
    with owner.connect() as conn:
        return _df(
            conn,
            "SELECT ts, level, logger, message FROM ops.pipeline_logs WHERE run_id = :r ORDER BY id LIMIT :n",
            {"r": run_id, "n": limit},
        )


def latest_run(engine: sa.Engine, *, status: str | None = None) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.text(
                    "SELECT run_id, trigger, status, started_at, finished_at, error FROM ops.pipeline_runs"
                    " WHERE CAST(:status AS text) IS NULL OR status = :status ORDER BY started_at DESC LIMIT 1"
                ),
                {"status": status},
            )
            .mappings()
            .one_or_none()
        )
    return dict(row) if row else None


def load_history(engine: sa.Engine, *, limit: int = 20) -> pd.DataFrame:
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT load_id, run_id, status, started_at, finished_at, months, rows_loaded, rows_replaced,"
            " duration_ms, error FROM mart.load_history ORDER BY load_id DESC LIMIT :n",
            {"n": limit},
        )


# --- reconciliation (backend.mart.reconcile) -----------------------------------------------------------


def reconciliation(engine: sa.Engine) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """The latest check (stop-gap header read: reconcile has no reader for it) and its mismatches from
    reconcile.list_mismatches."""
    with engine.connect() as conn:
        check = (
            conn.execute(
                sa.text(
                    "SELECT check_id, checked_at, run_id, tolerance, days_checked, mismatches"
                    " FROM mart.reconciliation_checks ORDER BY check_id DESC LIMIT 1"
                )
            )
            .mappings()
            .one_or_none()
        )
    if check is None:
        return None, pd.DataFrame()
    rows = reconcile.list_mismatches(engine, check_id=check["check_id"])
    frame = pd.DataFrame([r.__dict__ for r in rows], columns=list(reconcile.ReconciliationRow.__dataclass_fields__))
    for col in ("mart_total", "silver_total", "reported_total"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return dict(check), frame


def reconcile_now(owner: sa.Engine, lake) -> reconcile.ReconciliationReport:
    """Compare mart, silver and source totals now (the pipeline does not run this step by itself yet)."""
    return reconcile.reconcile(owner, lake=lake)


# --- sources -------------------------------------------------------------------------------------------


def batch_states(owner: sa.Engine, *, limit: int = 50) -> pd.DataFrame:
    """Ingest batches and their handshake state (ops.source_batches is not granted to the reader)."""
    from backend.ingest.handshake import batch_states as states

    return pd.DataFrame(states(owner, limit=limit))


def source_cursors(engine: sa.Engine) -> pd.DataFrame:
    """What each source delivered (stop-gap: the cursor store reads per source, not a summary)."""
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT source, scope, metric, min(day) AS first_day, max(day) AS last_day, count(*) AS days,"
            " max(fetched_at) AS fetched_at FROM ops.source_cursors GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )


def known_dimension(name: str) -> bool:
    return name in BY_NAME or (name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX))
