"""Thin, typed reads and writes of the cost mart for the pages (until backend.mart.queries / backend.analytics land).

Every function takes an engine first, so pages pass the cached reader (or owner, for writes) and tests pass
their own. Pages read the aggregates (agg_cost_daily / agg_cost_by_tag), never the fact table, except for
the resource-level drill-down. No SQL lives in pages/.
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

log = logging.getLogger(__name__)

METRICS = {"actual": "actual_cost", "amortized": "amortized_cost"}
GRAINS = ("day", "week", "month")


@dataclass(frozen=True)
class Dim:
    """A group-by/filter dimension of the explorer: the dimension table, its key and the label shown."""

    name: str
    title: str
    table: str
    key: str
    label: str = "label"
    in_aggregate: bool = True


DIMS: dict[str, Dim] = {
    d.name: d
    for d in (
        Dim("service", "Service", "dim_service", "service_key"),
        Dim("service_category", "Service category", "dim_service", "service_key", label="service_category"),
        Dim("subscription", "Subscription", "dim_subscription", "subscription_key"),
        Dim("resource_group", "Resource group", "dim_resource_group", "resource_group_key"),
        Dim("region", "Region", "dim_region", "region_key"),
        Dim("pricing_model", "Pricing model", "dim_pricing_model", "pricing_model_key"),
        Dim("charge_category", "Charge category", "dim_charge_category", "charge_category_key"),
        Dim("billing_account", "Billing account", "dim_billing_account", "billing_account_key"),
        Dim("currency", "Currency", "dim_currency", "currency_key", label="currency_code"),
        Dim("source", "Source", "dim_source", "source_key"),
        Dim("resource", "Resource", "dim_resource", "resource_key", in_aggregate=False),
        Dim("meter", "Meter", "dim_meter", "meter_key", in_aggregate=False),
    )
}
TAG_PREFIX = "tag:"


def _df(conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    result = conn.execute(sa.text(sql), dict(params or {}))
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for col in frame.columns:
        # numeric -> Decimal; the pages chart and format floats.
        present = frame[col].dropna() if frame[col].dtype == object else ()
        if len(present) and isinstance(present.iloc[0], Decimal):
            frame[col] = frame[col].astype(float)
    return frame


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {list(METRICS)}")
    return METRICS[metric]


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
    """What the mart holds: the latest charge date, the last successful load and run (cache key)."""

    first_date: dt.date | None = None
    as_of: dt.date | None = None
    last_load_id: int | None = None
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
        return f"{self.last_load_id}:{self.last_run_id}"


def data_status(engine: sa.Engine) -> DataStatus:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT min(charge_month), max(charge_month) FROM mart.agg_cost_monthly")
        ).one_or_none()
        status = DataStatus()
        if row and row[1] is not None:
            # The monthly aggregate is tiny: find the last month there, then the last day inside it.
            status.first_date = row[0]
            status.as_of = conn.execute(
                sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily WHERE charge_date >= :m"), {"m": row[1]}
            ).scalar()
        load = conn.execute(
            sa.text(
                "SELECT load_id, finished_at FROM mart.load_history WHERE status = 'succeeded'"
                " ORDER BY load_id DESC LIMIT 1"
            )
        ).one_or_none()
        if load:
            status.last_load_id, status.last_loaded_at = load
        run = conn.execute(
            sa.text(
                "SELECT run_id, finished_at FROM ops.pipeline_runs WHERE status = 'succeeded'"
                " ORDER BY started_at DESC LIMIT 1"
            )
        ).one_or_none()
        if run:
            status.last_run_id, status.last_run_at = run
        if status.as_of is not None:
            status.currencies = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "SELECT c.currency_code FROM mart.agg_cost_monthly a JOIN mart.dim_currency c"
                        " USING (currency_key) GROUP BY 1 ORDER BY sum(a.actual_cost) DESC"
                    )
                )
            ]
    return status


# --- filters ------------------------------------------------------------------------------------------


def _filter_sql(filters: Mapping[str, Sequence[str]], params: dict[str, Any], *, alias: str = "a") -> str:
    """AND-ed `key IN (keys of the chosen labels)` clauses; values are labels as the pages show them."""
    clauses = []
    for i, (name, values) in enumerate(sorted(filters.items())):
        if not values or name not in DIMS:
            continue
        d = DIMS[name]
        params[f"f{i}"] = list(values)
        clauses.append(f"{alias}.{d.key} IN (SELECT {d.key} FROM mart.{d.table} WHERE {d.label} = ANY(:f{i}))")
    return "".join(f" AND {c}" for c in clauses)


def dimension_values(engine: sa.Engine, name: str, *, limit: int = 500) -> list[str]:
    """Members of a dimension (labels), biggest first; for a tag key ("tag:env") its values."""
    with engine.connect() as conn:
        if name.startswith(TAG_PREFIX):
            rows = conn.execute(
                sa.text(
                    "SELECT tag_value FROM mart.agg_cost_by_tag WHERE tag_key = :k GROUP BY 1"
                    " ORDER BY sum(actual_cost) DESC LIMIT :n"
                ),
                {"k": name[len(TAG_PREFIX) :], "n": limit},
            )
            return [r[0] for r in rows]
        d = DIMS[name]
        if d.in_aggregate:
            sql = (
                f"SELECT d.{d.label} FROM mart.agg_cost_monthly a JOIN mart.{d.table} d USING ({d.key})"
                f" GROUP BY 1 ORDER BY sum(a.actual_cost) DESC LIMIT :n"
            )
        else:
            sql = f"SELECT DISTINCT {d.label} FROM mart.{d.table} WHERE {d.key} <> 0 ORDER BY 1 LIMIT :n"
        return [r[0] for r in conn.execute(sa.text(sql), {"n": limit})]


def tag_keys(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT DISTINCT tag_key FROM mart.dim_tag ORDER BY 1"))]


# --- explorer -----------------------------------------------------------------------------------------


def cost_by(
    engine: sa.Engine,
    *,
    group_by: str,
    start: dt.date,
    end: dt.date,
    grain: str = "day",
    metric: str = "actual",
    filters: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Cost per period and member of `group_by` (a dimension name or "tag:<key>"): columns period, member,
    currency, cost. Grain "day" / "week" (ISO, Monday) / "month"."""
    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r}: use one of {GRAINS}")
    col = _metric(metric)
    params: dict[str, Any] = {"start": start, "end": end, "grain": grain}
    filters = dict(filters or {})
    if group_by.startswith(TAG_PREFIX):
        # The tag aggregate carries subscription and currency only; other filters do not apply to it.
        params["tag"] = group_by[len(TAG_PREFIX) :]
        tag_values = filters.pop(group_by, None)
        where = _filter_sql({k: v for k, v in filters.items() if k in ("subscription", "currency")}, params)
        if tag_values:
            params["tv"] = list(tag_values)
            where += " AND a.tag_value = ANY(:tv)"
        sql = f"""
            SELECT date_trunc(:grain, a.charge_date)::date AS period, a.tag_value AS member,
                   c.currency_code AS currency, sum(a.{col}) AS cost
            FROM mart.agg_cost_by_tag a JOIN mart.dim_currency c USING (currency_key)
            WHERE a.tag_key = :tag AND a.charge_date BETWEEN :start AND :end {where}
            GROUP BY 1, 2, 3 ORDER BY 1, 2"""
    else:
        d = DIMS[group_by]
        source = (
            "mart.agg_cost_daily"
            if d.in_aggregate and all(DIMS[k].in_aggregate for k in filters if k in DIMS)
            else "mart.fact_cost_daily"
        )
        where = _filter_sql(filters, params)
        sql = f"""
            WITH g AS (
                SELECT date_trunc(:grain, a.charge_date)::date AS period, a.{d.key} AS k, a.currency_key,
                       sum(a.{col}) AS cost
                FROM {source} a
                WHERE a.charge_date BETWEEN :start AND :end {where}
                GROUP BY 1, 2, 3)
            SELECT g.period, d.{d.label} AS member, c.currency_code AS currency, sum(g.cost) AS cost
            FROM g JOIN mart.{d.table} d ON d.{d.key} = g.k JOIN mart.dim_currency c USING (currency_key)
            GROUP BY 1, 2, 3 ORDER BY 1, 2"""
    with engine.connect() as conn:
        frame = _df(conn, sql, params)
    if frame.empty:
        return pd.DataFrame({"period": [], "member": [], "currency": [], "cost": []})
    frame["period"] = pd.to_datetime(frame["period"])
    frame["member"] = frame["member"].replace("", "(none)")
    return frame


def top_n(frame: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """Keep the n biggest members (by total cost) and fold the rest into "Other" for readable charts."""
    if frame.empty or frame["member"].nunique() <= n:
        return frame
    keep = frame.groupby("member")["cost"].sum().abs().nlargest(n).index
    out = frame.copy()
    out.loc[~out["member"].isin(keep), "member"] = "Other"
    return out.groupby(["period", "member", "currency"], as_index=False)["cost"].sum()


def daily_total(
    engine: sa.Engine,
    *,
    start: dt.date,
    end: dt.date,
    metric: str = "actual",
    currency: str | None = None,
) -> pd.DataFrame:
    col = _metric(metric)
    params: dict[str, Any] = {"start": start, "end": end, "cur": currency}
    sql = f"""
        SELECT a.charge_date AS day, sum(a.{col}) AS cost
        FROM mart.agg_cost_daily a
        WHERE a.charge_date BETWEEN :start AND :end
          AND (CAST(:cur AS text) IS NULL
               OR a.currency_key = (SELECT currency_key FROM mart.dim_currency WHERE currency_code = :cur))
        GROUP BY 1 ORDER BY 1"""
    with engine.connect() as conn:
        frame = _df(conn, sql, params)
    if not frame.empty:
        frame["day"] = pd.to_datetime(frame["day"])
    return frame


# --- overview -----------------------------------------------------------------------------------------


@dataclass
class Kpis:
    as_of: dt.date
    currency: str
    mtd: float
    last_month_same_day: float
    last_month_total: float
    forecast: float | None
    forecast_low: float | None
    forecast_high: float | None
    forecast_method: str

    @property
    def vs_last_month_pct(self) -> float | None:
        if not self.last_month_same_day:
            return None
        return (self.mtd - self.last_month_same_day) / abs(self.last_month_same_day) * 100


def kpis(engine: sa.Engine, *, as_of: dt.date, currency: str, metric: str = "actual") -> Kpis:
    """Month-to-date, the same span last month, and the end-of-month forecast with its interval.

    The forecast comes from mart.forecasts (analytics) when it covers the rest of the month; otherwise a
    run-rate estimate with a band from the spread of the last 28 daily totals, labelled as such."""
    col = _metric(metric)
    start = month_start(as_of)
    prev_start, prev_same = previous_month_same_day(as_of)
    prev_end = start - dt.timedelta(days=1)
    cur = "(SELECT currency_key FROM mart.dim_currency WHERE currency_code = :cur)"
    with engine.connect() as conn:
        sums = conn.execute(
            sa.text(
                f"""
                SELECT coalesce(sum(a.{col}) FILTER (WHERE a.charge_date BETWEEN :start AND :as_of), 0),
                       coalesce(sum(a.{col}) FILTER (WHERE a.charge_date BETWEEN :ps AND :psame), 0),
                       coalesce(sum(a.{col}) FILTER (WHERE a.charge_date BETWEEN :ps AND :pe), 0)
                FROM mart.agg_cost_daily a
                WHERE a.charge_date BETWEEN :ps AND :as_of AND a.currency_key = {cur}"""
            ),
            {"start": start, "as_of": as_of, "ps": prev_start, "psame": prev_same, "pe": prev_end, "cur": currency},
        ).one()
        mtd, prev_mtd, prev_total = (float(v) for v in sums)
        remaining = (month_end(as_of) - as_of).days
        fc = conn.execute(
            sa.text(
                """
                WITH latest AS (
                    SELECT max(generated_at) AS g FROM mart.forecasts
                    WHERE scope_type = 'total' AND metric = :metric)
                SELECT count(*), sum(point), sum(coalesce(lower_bound, point)), sum(coalesce(upper_bound, point)),
                       max(method)
                FROM mart.forecasts f, latest
                WHERE f.scope_type = 'total' AND f.metric = :metric AND f.generated_at = latest.g
                  AND f.forecast_date > :as_of AND f.forecast_date <= :eom
                  AND (f.currency IS NULL OR f.currency = :cur)"""
            ),
            {"metric": metric, "as_of": as_of, "eom": month_end(as_of), "cur": currency},
        ).one()
        if remaining == 0:
            forecast, low, high, method = mtd, mtd, mtd, "month complete"
        elif fc[0] and fc[0] >= remaining:
            forecast, low, high, method = mtd + float(fc[1]), mtd + float(fc[2]), mtd + float(fc[3]), str(fc[4])
        else:
            recent = conn.execute(
                sa.text(
                    f"""
                    SELECT a.charge_date, sum(a.{col}) FROM mart.agg_cost_daily a
                    WHERE a.charge_date BETWEEN :from AND :as_of AND a.currency_key = {cur}
                    GROUP BY 1"""
                ),
                {"from": as_of - dt.timedelta(days=27), "as_of": as_of, "cur": currency},
            ).all()
            values = pd.Series([float(v) for _, v in recent])
            if values.empty:
                forecast = low = high = None
            else:
                mean, std = float(values.mean()), float(values.std(ddof=1) if len(values) > 1 else 0.0)
                forecast = mtd + mean * remaining
                # Daily totals roughly independent: the sum's spread grows with sqrt(days); ~95 %.
                half = 1.96 * std * remaining**0.5
                low, high = max(mtd, forecast - half), forecast + half
            method = "run-rate estimate (last 28 days)"
    return Kpis(as_of, currency, mtd, prev_mtd, prev_total, forecast, low, high, method)


def top_movers(
    engine: sa.Engine,
    *,
    as_of: dt.date,
    currency: str,
    dimension: str = "service",
    days: int = 7,
    metric: str = "actual",
    limit: int = 5,
) -> pd.DataFrame:
    """Members whose cost changed most: the last `days` days vs the `days` before."""
    col = _metric(metric)
    d = DIMS[dimension]
    cur_start = as_of - dt.timedelta(days=days - 1)
    prev_start = cur_start - dt.timedelta(days=days)
    sql = f"""
        WITH g AS (
            SELECT a.{d.key} AS k,
                   coalesce(sum(a.{col}) FILTER (WHERE a.charge_date >= :cs), 0) AS current,
                   coalesce(sum(a.{col}) FILTER (WHERE a.charge_date < :cs), 0) AS previous
            FROM mart.agg_cost_daily a
            WHERE a.charge_date BETWEEN :ps AND :as_of
              AND a.currency_key = (SELECT currency_key FROM mart.dim_currency WHERE currency_code = :cur)
            GROUP BY 1)
        SELECT d.{d.label} AS member, g.current, g.previous, g.current - g.previous AS change
        FROM g JOIN mart.{d.table} d ON d.{d.key} = g.k
        ORDER BY abs(g.current - g.previous) DESC LIMIT :limit"""
    with engine.connect() as conn:
        frame = _df(conn, sql, {"cs": cur_start, "ps": prev_start, "as_of": as_of, "cur": currency, "limit": limit})
    if not frame.empty:
        frame["change_pct"] = [
            (c / p * 100) if p else None for c, p in zip(frame["change"], frame["previous"], strict=True)
        ]
    return frame


# --- anomalies ----------------------------------------------------------------------------------------


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


def series_for(engine: sa.Engine, *, level: str, value: str, metric: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """The daily series an anomaly was found in (level = total / subscription / resource_group / service /
    tag:<key>); value is the member's natural key as stored in mart.anomalies."""
    col = _metric(metric)
    params: dict[str, Any] = {"start": start, "end": end, "v": value}
    if level == "total":
        sql = f"SELECT charge_date AS day, sum({col}) AS cost FROM mart.agg_cost_daily a WHERE true"
    elif level.startswith(TAG_PREFIX):
        params["tag"] = level[len(TAG_PREFIX) :]
        sql = f"SELECT charge_date AS day, sum({col}) AS cost FROM mart.agg_cost_by_tag a WHERE tag_key = :tag AND tag_value = :v"
    else:
        natural = {
            "subscription": ("dim_subscription", "subscription_key", "subscription_id"),
            "resource_group": ("dim_resource_group", "resource_group_key", "resource_group"),
            "service": ("dim_service", "service_key", "service_name"),
            "region": ("dim_region", "region_key", "region"),
        }
        if level not in natural:
            return pd.DataFrame({"day": [], "cost": []})
        table, key, column = natural[level]
        sql = (
            f"SELECT charge_date AS day, sum({col}) AS cost FROM mart.agg_cost_daily a"
            f" WHERE a.{key} IN (SELECT {key} FROM mart.{table} WHERE {column} = :v OR label = :v)"
        )
    sql += " AND a.charge_date BETWEEN :start AND :end GROUP BY 1 ORDER BY 1"
    with engine.connect() as conn:
        frame = _df(conn, sql, params)
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
    """Mark an anomaly as expected / resolved / reopened and record the feedback (owner role)."""
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


# --- budgets ------------------------------------------------------------------------------------------

BUDGET_SCOPES = ("total", "subscription", "resource_group", "service", "tag")
BUDGET_PERIODS = ("monthly", "quarterly", "yearly")


class BudgetError(ValueError):
    """A budget the user must fix (message is shown as is)."""


def validate_budget(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check a budget form; returns the cleaned values or raises BudgetError with what to fix."""
    name = str(values.get("name") or "").strip()
    if not name:
        raise BudgetError("Give the budget a name.")
    if len(name) > 120:
        raise BudgetError("Keep the name under 120 characters.")
    scope = values.get("scope_type") or "total"
    if scope not in BUDGET_SCOPES:
        raise BudgetError(f"Scope must be one of {', '.join(BUDGET_SCOPES)}.")
    scope_value = str(values.get("scope_value") or "").strip()
    tag_key = str(values.get("tag_key") or "").strip() or None
    if scope != "total" and not scope_value:
        raise BudgetError(f"Pick the {scope.replace('_', ' ')} this budget covers.")
    if scope == "tag" and not tag_key:
        raise BudgetError("Pick the tag key for a tag budget.")
    try:
        amount = float(values.get("amount") or 0)
    except (TypeError, ValueError) as exc:
        raise BudgetError("The amount must be a number.") from exc
    if amount <= 0:
        raise BudgetError("The amount must be greater than zero.")
    period = values.get("period") or "monthly"
    if period not in BUDGET_PERIODS:
        raise BudgetError(f"Period must be one of {', '.join(BUDGET_PERIODS)}.")
    thresholds = sorted({float(t) for t in values.get("actual_thresholds") or [50, 80, 100]})
    if any(t <= 0 or t > 1000 for t in thresholds):
        raise BudgetError("Alert thresholds are percentages between 1 and 1000.")
    currency = str(values.get("currency") or "").strip().upper()
    if len(currency) != 3:
        raise BudgetError("Currency must be a 3-letter code such as EUR or USD.")
    metric = values.get("metric") or "actual"
    _metric(metric)
    return {
        "name": name,
        "scope_type": scope,
        "scope_value": "" if scope == "total" else scope_value,
        "tag_key": tag_key if scope == "tag" else None,
        "metric": metric,
        "amount": amount,
        "currency": currency,
        "period": period,
        "actual_thresholds": thresholds,
        "forecast_thresholds": sorted({float(t) for t in values.get("forecast_thresholds") or [100]}),
        "enabled": bool(values.get("enabled", True)),
    }


def list_budgets(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT budget_id, name, scope_type, scope_value, tag_key, metric, amount, currency, period,"
            " actual_thresholds, forecast_thresholds, enabled, updated_at FROM mart.v_budgets ORDER BY name",
        )


def _budget_write(owner: sa.Engine, sql: str, params: dict[str, Any]) -> Any:
    try:
        with owner.begin() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    except sa.exc.IntegrityError as exc:
        if "budgets_name_key" in str(exc.orig) or "unique" in str(exc.orig).lower():
            raise BudgetError(f"A budget named {params['name']!r} already exists; pick another name.") from exc
        raise BudgetError(f"The database refused this budget: {exc.orig}") from exc


def create_budget(owner: sa.Engine, values: Mapping[str, Any]) -> int:
    clean = validate_budget(values)
    return _budget_write(
        owner,
        "INSERT INTO mart.budgets (name, scope_type, scope_value, tag_key, metric, amount, currency, period,"
        " actual_thresholds, forecast_thresholds, enabled) VALUES (:name, :scope_type, :scope_value, :tag_key,"
        " :metric, :amount, :currency, :period, :actual_thresholds, :forecast_thresholds, :enabled)"
        " RETURNING budget_id",
        clean,
    )


def update_budget(owner: sa.Engine, budget_id: int, values: Mapping[str, Any]) -> int:
    clean = validate_budget(values)
    found = _budget_write(
        owner,
        "UPDATE mart.budgets SET name = :name, scope_type = :scope_type, scope_value = :scope_value,"
        " tag_key = :tag_key, metric = :metric, amount = :amount, currency = :currency, period = :period,"
        " actual_thresholds = :actual_thresholds, forecast_thresholds = :forecast_thresholds,"
        " enabled = :enabled, updated_at = now() WHERE budget_id = :id RETURNING budget_id",
        {**clean, "id": budget_id},
    )
    if found is None:
        raise BudgetError(f"Budget {budget_id} no longer exists.")
    return budget_id


def delete_budget(owner: sa.Engine, budget_id: int) -> int:
    with owner.begin() as conn:
        conn.execute(sa.text("DELETE FROM mart.budgets WHERE budget_id = :id"), {"id": budget_id})
    return budget_id


def period_bounds(period: str, day: dt.date) -> tuple[dt.date, dt.date]:
    if period == "monthly":
        return month_start(day), month_end(day)
    if period == "quarterly":
        first = dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        return first, month_end(dt.date(first.year, first.month + 2, 1))
    return dt.date(day.year, 1, 1), dt.date(day.year, 12, 31)


def _scope_sql(budget: Mapping[str, Any], params: dict[str, Any]) -> tuple[str, str]:
    """(source table, extra WHERE) for a budget's scope."""
    scope = budget["scope_type"]
    params["sv"] = budget.get("scope_value") or ""
    if scope == "tag":
        params["tk"] = budget.get("tag_key") or ""
        return "mart.agg_cost_by_tag", " AND a.tag_key = :tk AND a.tag_value = :sv"
    if scope == "total":
        return "mart.agg_cost_daily", ""
    table, key, natural = {
        "subscription": ("dim_subscription", "subscription_key", "subscription_id"),
        "resource_group": ("dim_resource_group", "resource_group_key", "resource_group"),
        "service": ("dim_service", "service_key", "service_name"),
    }[scope]
    return (
        "mart.agg_cost_daily",
        f" AND a.{key} IN (SELECT {key} FROM mart.{table} WHERE {natural} = :sv OR label = :sv)",
    )


def budget_burn(engine: sa.Engine, budget: Mapping[str, Any], *, as_of: dt.date) -> pd.DataFrame:
    """Cumulative spend per day of the budget's current period, in its currency: day, cost, cumulative."""
    start, end = period_bounds(budget["period"], as_of)
    params: dict[str, Any] = {"start": start, "end": min(end, as_of), "cur": budget["currency"]}
    table, where = _scope_sql(budget, params)
    col = _metric(budget.get("metric") or "actual")
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
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT triggered_at, budget_name, period_start, threshold_type, threshold_pct, amount_at_alert,"
            " budget_amount, currency, webhook_status, webhook_error FROM mart.budget_alerts"
            " ORDER BY triggered_at DESC LIMIT :n",
            {"n": limit},
        )


# --- pipeline -----------------------------------------------------------------------------------------


def runs(engine: sa.Engine, *, limit: int = 50) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = _df(
            conn,
            "SELECT run_id, trigger, status, started_at, finished_at, rows_in, rows_out, error,"
            " extract(epoch FROM coalesce(finished_at, now()) - started_at) AS seconds"
            " FROM ops.pipeline_runs ORDER BY started_at DESC LIMIT :n",
            {"n": limit},
        )
    return frame


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


def latest_run(engine: sa.Engine, *, since: dt.datetime | None = None) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.text(
                    "SELECT run_id, trigger, status, started_at, finished_at, error FROM ops.pipeline_runs"
                    " WHERE CAST(:since AS timestamptz) IS NULL OR started_at >= :since"
                    " ORDER BY started_at DESC LIMIT 1"
                ),
                {"since": since},
            )
            .mappings()
            .one_or_none()
        )
    return dict(row) if row else None


def mart_freshness(engine: sa.Engine) -> pd.DataFrame:
    """Per mart area: the latest data day and when it was last written."""
    sql = """
        SELECT 'cost (agg_cost_daily)' AS area, max(charge_date)::text AS latest,
               (SELECT max(finished_at) FROM mart.load_history WHERE status = 'succeeded') AS written_at
        FROM mart.agg_cost_daily
        UNION ALL SELECT 'anomalies', max(charge_date)::text, max(detected_at) FROM mart.anomalies
        UNION ALL SELECT 'forecasts', max(forecast_date)::text, max(generated_at) FROM mart.forecasts
        UNION ALL SELECT 'budget alerts', max(period_start)::text, max(triggered_at) FROM mart.budget_alerts"""
    with engine.connect() as conn:
        return _df(conn, sql)


def load_history(engine: sa.Engine, *, limit: int = 20) -> pd.DataFrame:
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT load_id, run_id, status, started_at, finished_at, months, rows_loaded, rows_replaced,"
            " duration_ms, error FROM mart.load_history ORDER BY load_id DESC LIMIT :n",
            {"n": limit},
        )


def reconciliation(engine: sa.Engine) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """The latest reconciliation check and its non-ok rows (all rows when everything matched)."""
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
        rows = _df(
            conn,
            "SELECT charge_date, source, currency, mart_total, silver_total, reported_total, status, detail"
            " FROM mart.reconciliation_results WHERE check_id = :c ORDER BY (status = 'ok'), charge_date DESC"
            " LIMIT 500",
            {"c": check["check_id"]},
        )
    return dict(check), rows


def source_cursors(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return _df(
            conn,
            "SELECT source, scope, metric, min(day) AS first_day, max(day) AS last_day, count(*) AS days,"
            " max(fetched_at) AS fetched_at FROM ops.source_cursors GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
