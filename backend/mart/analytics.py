"""Typed readers of what the analytics step stored (anomalies with their bands, month-end forecasts, budget burn
and alerts, analytics freshness), plus the one write the UI makes on them: a verdict on an anomaly.

backend.mart.analytics_store, .forecast and .budgets write these tables; pages and tools read them here. Money
stays Decimal (the mart's numeric); callers that chart convert. Reads work on the read-only role.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from backend.auth import Principal, Role, require
from backend.mart import budgets_sql, queries
from backend.mart.audit import record

ANOMALY_STATUSES = ("open", "expected", "resolved")
VERDICTS = ("expected", "resolved", "reopened")
# How an anomaly level's member (its natural key, as analytics stores it) is found in the daily aggregate.
LEVEL_KEYS = {**budgets_sql.SCOPE_DIM, "region": ("dim_region", "region_key", "region")}


@dataclass(frozen=True)
class Anomaly:
    anomaly_id: int
    charge_date: dt.date
    level: str
    dimension_value: str  # natural key; "" is the member "(none)"
    metric: str
    kind: str
    severity: float | None
    actual: Decimal
    expected: Decimal | None
    lower_bound: Decimal | None
    upper_bound: Decimal | None
    impact: Decimal | None
    currency: str | None
    contributors: list[dict[str, Any]]
    status: str
    feedback: str | None
    detected_at: dt.datetime
    method: str | None
    # The clouds (FOCUS ProviderName) with cost in the anomaly's member that day; [] when none is named.
    providers: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class DailyCost:
    day: dt.date
    cost: Decimal


@dataclass(frozen=True)
class BandPoint:
    """One stored detection of a series: the expected value and band that day, and what happened."""

    day: dt.date
    expected: Decimal | None
    lower_bound: Decimal | None
    upper_bound: Decimal | None
    actual: Decimal
    severity: float | None
    status: str
    kind: str


@dataclass(frozen=True)
class MonthEndForecast:
    """The analytics step's month-end total (actual to date + forecast of the rest) with its own interval."""

    period_start: dt.date
    period_end: dt.date
    actual_to_date: Decimal
    point: Decimal
    lower: Decimal | None
    upper: Decimal | None
    interval_level: float | None
    method: str
    as_of: dt.date
    generated_at: dt.datetime
    # "" is an unknown billing currency, or a row from before forecasts were per currency (when several were summed).
    currency: str


@dataclass(frozen=True)
class BudgetAlert:
    triggered_at: dt.datetime
    budget_name: str
    period_start: dt.date
    threshold_type: str
    threshold_pct: float
    amount_at_alert: Decimal
    budget_amount: Decimal
    currency: str
    webhook_status: str | None
    webhook_error: str | None


@dataclass(frozen=True)
class AreaFreshness:
    """The latest day an analytics area covers and when it was last written (None: never)."""

    area: str
    latest: dt.date | None
    written_at: dt.datetime | None


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    return limit


def _contributors(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):  # json (not jsonb) drivers hand back text
        value = json.loads(value or "[]")
    return list(value or [])


# Which clouds an anomaly's member had cost in on its day: its dimension's rows of the daily aggregate, or for
# a tag level the fact rows of the resources carrying the tag (the aggregate has no resource).
_PROVIDERS = """
    LEFT JOIN LATERAL (
        SELECT array_agg(DISTINCT p.provider_name ORDER BY p.provider_name) AS names FROM (
            SELECT x.provider_key FROM mart.agg_cost_daily x
            WHERE x.charge_date = an.charge_date AND an.level NOT LIKE 'tag:%' AND (
                an.level = 'total'
                OR (an.level = 'subscription' AND x.subscription_key IN (
                    SELECT subscription_key FROM mart.dim_subscription WHERE subscription_id = an.dimension_value))
                OR (an.level = 'resource_group' AND x.resource_group_key IN (
                    SELECT resource_group_key FROM mart.dim_resource_group WHERE resource_group = an.dimension_value))
                OR (an.level = 'service' AND x.service_key IN (
                    SELECT service_key FROM mart.dim_service WHERE service_name = an.dimension_value))
                OR (an.level = 'region' AND x.region_key IN (
                    SELECT region_key FROM mart.dim_region WHERE region = an.dimension_value))
                OR (an.level = 'provider' AND x.provider_key IN (
                    SELECT provider_key FROM mart.dim_provider WHERE provider_name = an.dimension_value)))
            UNION
            SELECT f.provider_key FROM mart.fact_cost_daily f
            WHERE an.level LIKE 'tag:%' AND f.charge_date = an.charge_date AND f.resource_key IN (
                SELECT b.resource_key FROM mart.bridge_resource_tag b JOIN mart.dim_tag t USING (tag_id)
                WHERE t.tag_key = substr(an.level, 5) AND t.tag_value = an.dimension_value)
        ) k JOIN mart.dim_provider p USING (provider_key) WHERE p.provider_name <> ''
    ) pv ON true"""


def list_anomalies(
    engine: sa.Engine,
    *,
    status: str | None = "open",
    since: dt.date | None = None,
    limit: int = 1000,
    providers: list[str] | None = None,
) -> list[Anomaly]:
    """Anomalies newest day first, the most severe first within a day; `status` None = every status. Each says
    which clouds its member had cost in that day; `providers` keeps those on any of them."""
    if status is not None and status not in ANOMALY_STATUSES:
        raise ValueError(f"status must be one of {ANOMALY_STATUSES} or None, not {status!r}")
    sql = f"""
        SELECT an.anomaly_id, an.charge_date, an.level, an.dimension_value, an.metric, an.kind, an.severity::float8,
               an.actual, an.expected, an.lower_bound, an.upper_bound, an.impact, an.currency, an.contributors,
               an.status, an.feedback, an.detected_at, an.method, coalesce(pv.names, '{{}}')
        FROM mart.anomalies an {_PROVIDERS}
        WHERE (CAST(:status AS text) IS NULL OR an.status = :status)
          AND (CAST(:since AS date) IS NULL OR an.charge_date >= :since)
          AND (CAST(:providers AS text[]) IS NULL OR pv.names && CAST(:providers AS text[]))
        ORDER BY an.charge_date DESC, an.severity DESC NULLS LAST, an.anomaly_id
        LIMIT :n"""
    params = {"status": status, "since": since, "n": _limit(limit), "providers": list(providers) if providers else None}
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).all()
    return [Anomaly(*row[:13], _contributors(row[13]), *row[14:18], list(row[18] or [])) for row in rows]


def _in_one_currency(rows: list[tuple[dt.date, str, Any]], currency: str | None, what: str) -> list[DailyCost]:
    """(day, currency, cost) rows as one currency's daily series: `currency`, or the only one there is."""
    if currency is None:
        found = sorted({cur for _, cur, _ in rows})
        if len(found) > 1:
            raise ValueError(f"{what} has cost in {len(found)} currencies ({', '.join(found)}): pass currency=")
        currency = found[0] if found else None
    # A day whose cost is null (the metric is not available there) has no point, rather than a made-up zero.
    picked = (DailyCost(day, Decimal(cost)) for day, cur, cost in rows if cur == currency and cost is not None)
    return sorted(picked, key=lambda p: p.day)


def series(
    engine: sa.Engine,
    *,
    level: str,
    value: str,
    metric: str,
    start: dt.date,
    end: dt.date,
    currency: str | None = None,
) -> list[DailyCost]:
    """The daily series an anomaly was detected in: the member's cost in one billing currency, as detection
    splits it (amounts in two currencies are never added). `currency` None takes the member's only currency in
    the window, and raises ValueError when it has several.

    `level` is total, a LEVEL_KEYS dimension or "tag:<key>"; `value` its natural key ("" = none)."""
    col = queries._metric(metric)
    what = f"{level} {value!r}"
    if level == "total" or level.startswith(queries.TAG_PREFIX):
        # Tag values are their own labels, so the typed mart query answers these two directly.
        filters = {level: [value or queries.UNTAGGED]} if level.startswith(queries.TAG_PREFIX) else {}
        frame = queries.time_series(engine, start=start, end=end, metric=metric, filters=filters)
        rows = list(zip(frame["period"], frame["currency"], frame["cost_exact"], strict=True))
        return _in_one_currency(rows, currency, what)
    if level not in LEVEL_KEYS:
        raise ValueError(f"unknown anomaly level {level!r}: use total, tag:<key> or one of {sorted(LEVEL_KEYS)}")
    table, key, natural = LEVEL_KEYS[level]
    sql = (
        f"SELECT a.charge_date, c.currency_code, sum(a.{col}) FROM mart.agg_cost_daily a"
        " JOIN mart.dim_currency c USING (currency_key)"
        f" WHERE a.{key} IN (SELECT {key} FROM mart.{table} WHERE {natural} = :v)"
        " AND a.charge_date BETWEEN :start AND :end GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql), {"v": value, "start": start, "end": end})]
    return _in_one_currency(rows, currency, what)


def band(engine: sa.Engine, *, level: str, value: str, metric: str, currency: str | None = None) -> list[BandPoint]:
    """Every detection stored for one series (expected value and band per day), oldest first; with `currency`,
    that currency's series only."""
    sql = """
        SELECT charge_date, expected, lower_bound, upper_bound, actual, severity::float8, status, kind
        FROM mart.anomalies WHERE level = :l AND dimension_value = :v AND metric = :m
          AND (CAST(:c AS text) IS NULL OR currency = :c)
        ORDER BY charge_date"""
    params = {"l": level, "v": value, "m": metric, "c": currency}
    with engine.connect() as conn:
        return [BandPoint(*row) for row in conn.execute(sa.text(sql), params)]


def set_anomaly_status(
    owner: sa.Engine, anomaly_id: int, *, verdict: str, actor: Principal, note: str = "", suppress_days: int = 0
) -> int:
    """Mark an anomaly expected / resolved / reopened and record the feedback the analytics step reads back
    (store.read_feedback: an 'expected' verdict suppresses the same pattern until `suppress_until`).
    Needs the editor role; one transaction with its audit row; LookupError when the anomaly does not exist.
    Needs the owner engine."""
    require(actor, Role.editor, "Giving anomaly feedback")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    if suppress_days < 0:
        raise ValueError(f"suppress_days must be >= 0, not {suppress_days}")
    status = "open" if verdict == "reopened" else verdict
    with owner.begin() as conn:
        row = conn.execute(
            sa.text(
                "UPDATE mart.anomalies SET status = :s, feedback = :note, updated_at = now() WHERE anomaly_id = :id"
                " RETURNING level, dimension_value, kind, charge_date, currency"
            ),
            {"s": status, "note": note or None, "id": anomaly_id},
        ).one_or_none()
        if row is None:
            raise LookupError(f"anomaly {anomaly_id} not found")
        conn.execute(
            sa.text(
                "INSERT INTO mart.anomaly_feedback (anomaly_id, level, dimension_value, kind, currency, verdict, note,"
                " created_by, suppress_until) VALUES (:id, :l, :v, :k, :cur, :verdict, :note, :user, :until)"
            ),
            {
                "id": anomaly_id,
                "l": row.level,
                "v": row.dimension_value,
                "k": row.kind,
                # The verdict's own currency: it suppresses within it even after the anomaly row is gone.
                "cur": row.currency,
                "verdict": verdict,
                "note": note or None,
                "user": actor.who,
                "until": row.charge_date + dt.timedelta(days=suppress_days) if suppress_days else None,
            },
        )
        record(
            conn,
            actor,
            "anomaly.feedback",
            f"anomaly {anomaly_id}",
            {"verdict": verdict, "note": note or None, "suppress_days": suppress_days},
        )
    return anomaly_id


def month_end_forecast(
    engine: sa.Engine, *, as_of: dt.date, metric: str = "actual", currency: str | None = None
) -> MonthEndForecast | None:
    """The latest month-end forecast of the estate total in `currency` for the month holding `as_of`; None when
    there is none yet or only one in another currency. Analytics writes one per billing currency; a row with
    currency "" predates that (it summed every currency) or had none, so it never stands for a named one.
    `currency` None takes the latest in any currency (its `currency` says which; one run's currencies share a
    generation, so the first currency in code order of that generation)."""
    sql = """
        SELECT period_start, period_end, actual_to_date, point, lower_bound, upper_bound, interval_level::float8,
               method, as_of, generated_at, currency
        FROM mart.forecast_totals
        WHERE scope_type = 'total' AND scope_value = '' AND metric = :metric AND period = 'month_end'
          AND period_start = :start AND (CAST(:cur AS text) IS NULL OR currency = :cur)
        ORDER BY generated_at DESC, currency LIMIT 1"""
    queries._metric(metric)
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql), {"metric": metric, "start": as_of.replace(day=1), "cur": currency}).first()
    return MonthEndForecast(*row) if row else None


def budget_burn(engine: sa.Engine, budget: Mapping[str, Any], *, as_of: dt.date) -> list[DailyCost]:
    """Spend per day of the budget's period holding `as_of`, up to `as_of`, in the budget's currency; its scope
    and every filter match by natural key as backend.analytics.budgets evaluates them. `budget` is a
    mart.budgets row."""
    start, end = budgets_sql.period_bounds(budget["period"], as_of)
    with engine.connect() as conn:
        return [DailyCost(*row) for row in budgets_sql.daily_spend(conn, budget, start, min(end, as_of))]


@dataclass(frozen=True)
class BudgetForecast:
    """The evaluator's outlook of a budget's period: forecast total, its backtest on the budget's own history
    (MAPE of the horizon total over weekly origins in backtest_start..backtest_end) and the exceed date."""

    budget_id: int
    period_start: dt.date
    period_end: dt.date
    as_of: dt.date
    currency: str
    spent: Decimal
    forecast_total: Decimal | None
    lower_bound: Decimal | None
    upper_bound: Decimal | None
    method: str | None
    backtest_metric: str | None
    backtest_error: Decimal | None
    backtest_start: dt.date | None
    backtest_end: dt.date | None
    exceed_date: dt.date | None  # None: not expected this period
    run_id: str | None
    evaluated_at: dt.datetime


def budget_forecasts(engine: sa.Engine) -> dict[int, BudgetForecast]:
    """Each budget's latest evaluated outlook, by budget id (written by the pipeline's budgets step)."""
    return {r["budget_id"]: BudgetForecast(**r) for r in budgets_sql.latest_forecasts(engine)}


def budget_alerts(engine: sa.Engine, *, limit: int = 200) -> list[BudgetAlert]:
    """The alert history the budgets step recorded, newest first (survives deleted budgets)."""
    sql = (
        "SELECT triggered_at, budget_name, period_start, threshold_type, threshold_pct::float8, amount_at_alert,"
        " budget_amount, currency, webhook_status, webhook_error FROM mart.budget_alerts"
        " ORDER BY triggered_at DESC, alert_id DESC LIMIT :n"
    )
    with engine.connect() as conn:
        return [BudgetAlert(*row) for row in conn.execute(sa.text(sql), {"n": _limit(limit)})]


def freshness(engine: sa.Engine) -> list[AreaFreshness]:
    """Per analytics table: the latest day it covers and when it was last written."""
    sql = """
        SELECT 'anomalies', max(charge_date), max(detected_at) FROM mart.anomalies
        UNION ALL SELECT 'forecasts', max(forecast_date), max(generated_at) FROM mart.forecasts
        UNION ALL SELECT 'month-end forecasts', max(period_end), max(generated_at) FROM mart.forecast_totals
        UNION ALL SELECT 'budget alerts', max(period_start), max(triggered_at) FROM mart.budget_alerts"""
    with engine.connect() as conn:
        return [AreaFreshness(*row) for row in conn.execute(sa.text(sql))]
