"""The agent's tools: catalog, guarded read-only SQL, and FinOps tools built on the mart's query functions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa
from langchain_core.tools import BaseTool, StructuredTool
from sqlalchemy.exc import DBAPIError

from backend.agent import catalog
from backend.agent.periods import Period, PeriodError, resolve_day, resolve_period
from backend.agent.runner import ExecutedSQL, capturing, instrument, run_select
from backend.agent.sqlguard import DEFAULT_MAX_ROWS, UnsafeSQLError
from backend.analytics import budgets as budget_store
from backend.mart import agent_queries, queries, waste
from backend.mart.model import BY_NAME

log = logging.getLogger(__name__)

Metric = Literal["actual", "amortized"]
MODEL_ROWS = 25  # rows of a result the model sees; the UI gets the whole table

_DIMENSION_ALIASES = {
    "service_name": "service",
    "services": "service",
    "service_category": "service_category",
    "category": "service_category",
    "subscriptions": "subscription",
    "sub": "subscription",
    "resource_groups": "resource_group",
    "resourcegroup": "resource_group",
    "rg": "resource_group",
    "resources": "resource",
    "resource_name": "resource",
    "regions": "region",
    "location": "region",
    "locations": "region",
    "meters": "meter",
    "meter_name": "meter",
    "pricing": "pricing_model",
    "charge_type": "charge_category",
    "account": "billing_account",
    "billing_account_name": "billing_account",
    "cloud": "provider",
    "clouds": "provider",
    "providers": "provider",
    "provider_name": "provider",
    "cloud_provider": "provider",
    "host_provider": "provider",
    "service_providers": "service_provider",
    "service_provider_name": "service_provider",
    "vendor": "service_provider",
    "publisher": "service_provider",
    "date": "day",
    "charge_date": "day",
    "days": "day",
    "daily": "day",
    "weeks": "week",
    "weekly": "week",
    "months": "month",
    "monthly": "month",
    "charge_month": "month",
}
# Time "dimensions": cost_breakdown ranks days, weeks or months ("the most expensive day"); other tools refuse them.
TIME_DIMENSIONS = {"day": "daily", "week": "weekly", "month": "monthly"}


class ToolInputError(ValueError):
    """Arguments the tool cannot use; the message tells the model how to fix them."""


@dataclass
class ToolOutcome:
    """What a tool produced: the text for the model, and the table and SQL for the UI and the audit."""

    tool: str
    ok: bool
    summary: str
    frame: pd.DataFrame | None = None
    chart: bool = False  # the frame is a time series (first column = date)
    statements: list[ExecutedSQL] = field(default_factory=list)
    duration_ms: int = 0


@dataclass
class AgentContext:
    """What the tools need: the read-only engine and the limits. Built once per process."""

    engine: sa.Engine
    timeout_ms: int
    max_rows: int = DEFAULT_MAX_ROWS

    def __post_init__(self) -> None:
        instrument(self.engine)

    def as_of(self) -> dt.date:
        day = queries.data_as_of(self.engine)
        if day is None:
            raise ToolInputError("the cost mart is empty: run the pipeline (or load the demo estate) first")
        return day


# --- helpers --------------------------------------------------------------------------------
def normalize_dimension(name: str | None) -> str | None:
    if not name:
        return None
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in ("total", "none", "all", ""):
        return None
    if key.startswith(("tag:", "tag_")) or key.endswith("_tag"):
        tag = key.removeprefix("tag:").removeprefix("tag_").removesuffix("_tag")
        return f"tag:{tag}"
    key = _DIMENSION_ALIASES.get(key, key)
    if key == "service_category" or key in TIME_DIMENSIONS:
        return key
    if key not in BY_NAME:
        raise ToolInputError(
            f"unknown dimension {name!r}; use one of {', '.join(sorted(BY_NAME))}, service_category or tag:<key>"
            " (cost_breakdown also takes day, week or month)"
        )
    return key


def _member_dimension(name: str | None, tool: str) -> str | None:
    """normalize_dimension for tools whose dimension has members (not a day, week or month)."""
    dim = normalize_dimension(name)
    if dim in TIME_DIMENSIONS:
        raise ToolInputError(
            f"{tool} does not take the time dimension {dim!r}: use cost_trend with grain='{TIME_DIMENSIONS[dim]}' "
            f"for a series, or cost_breakdown with dimension='{dim}' to rank {dim}s"
        )
    return dim


def _resolve_member(ctx: AgentContext, dimension: str, value: str) -> str:
    """A filter value as the mart labels it: exact, then case-insensitive, then a unique substring."""
    if dimension == "service_category":
        return value
    candidates = queries.dimension_values(ctx.engine, dimension, search=value, limit=50)
    if value in candidates:
        return value
    exact = [c for c in candidates if c.lower() == value.lower()]
    if len(exact) == 1:
        return exact[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ToolInputError(f"no {dimension} matches {value!r}; call list_values('{dimension}') to see the names")
    raise ToolInputError(f"{value!r} matches several {dimension} values: {', '.join(candidates[:10])}; pick one")


def _filters(ctx: AgentContext, filters: dict[str, str] | None) -> dict[str, list[str]]:
    resolved: dict[str, list[str]] = {}
    for name, value in (filters or {}).items():
        dim = _member_dimension(name, "a filter")
        if dim is None or value in (None, ""):
            continue
        values = value if isinstance(value, list) else [value]
        resolved[dim] = [_resolve_member(ctx, dim, str(v)) for v in values]
    if "service_category" in resolved:
        # The mart addresses services by name; a category is the set of its services.
        category = resolved.pop("service_category")
        services = _services_in_categories(ctx, category)
        resolved["service"] = sorted(set(resolved.get("service", services)) & set(services))
    return resolved


def _services_in_categories(ctx: AgentContext, categories: list[str]) -> list[str]:
    found = agent_queries.services_in_categories(ctx.engine, categories)
    if not found:
        raise ToolInputError(f"no service category {', '.join(categories)!r}")
    return found


def _stored_members(ctx: AgentContext, dimension: str, label: str) -> list[str]:
    """The member as the analytics tables (anomalies, forecasts, budgets) store it: a subscription by its id,
    which silver keeps as /subscriptions/<lower guid>, the other levels by their label."""
    if dimension != "subscription":
        return [label]
    # Display names are not unique in Azure: a name may stand for several subscriptions.
    return agent_queries.subscription_ids(ctx.engine, label) or [label]


def _period(ctx: AgentContext, period: str | None) -> Period:
    return resolve_period(period, ctx.as_of())


def _inclusive(period: Period) -> tuple[dt.date, dt.date]:
    return period.start, period.end - dt.timedelta(days=1)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _table_text(frame: pd.DataFrame, rows: int = MODEL_ROWS) -> str:
    if frame.empty:
        return "(no rows)"
    shown = frame.head(rows).copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].round(2)
    text = shown.to_csv(index=False).strip()
    if len(frame) > rows:
        text += f"\n... {len(frame) - rows} more rows (shown to the user)"
    return text


def _breakdown_totals(
    ctx: AgentContext, *, period: Period, dimension: str | None, metric: str, filters: dict[str, list[str]]
) -> pd.DataFrame:
    """Cost per member over the whole period: columns <dimension or 'total'>, currency, cost. A time dimension
    (day, week, month) makes each day (Monday, 1st of the month) a member."""
    group_by = "service" if dimension == "service_category" else dimension
    grain = TIME_DIMENSIONS.get(dimension or "", "daily")
    if dimension in TIME_DIMENSIONS:
        group_by = None
    start, end = _inclusive(period)
    frame = queries.cost_breakdown(
        ctx.engine, start=start, end=end, group_by=group_by, grain=grain, metric=metric, filters=filters
    )
    label = dimension or "total"
    if frame.empty:
        return pd.DataFrame(columns=[label, "currency", "cost"])
    if dimension in TIME_DIMENSIONS:
        frame["group"] = frame["period"]
    if dimension == "service_category":
        categories = _service_categories(ctx)
        frame["group"] = frame["group"].map(lambda s: categories.get(s, "(none)"))
    totals = frame.groupby(["group", "currency"], as_index=False)["cost"].sum()
    totals = totals.rename(columns={"group": label}).sort_values("cost", ascending=False, ignore_index=True)
    return totals


def _service_categories(ctx: AgentContext) -> dict[str, str]:
    return {label: (category or "(none)") for label, category in agent_queries.service_categories(ctx.engine).items()}


# --- the tools' logic -----------------------------------------------------------------------
def list_tables_impl(ctx: AgentContext) -> ToolOutcome:
    return ToolOutcome("list_tables", True, catalog.list_tables())


def describe_table_impl(ctx: AgentContext, table: str) -> ToolOutcome:
    return ToolOutcome("describe_table", True, catalog.describe(table))


def run_sql_impl(ctx: AgentContext, sql: str) -> ToolOutcome:
    frame = run_select(ctx.engine, sql, max_rows=ctx.max_rows, timeout_ms=ctx.timeout_ms)
    chart = len(frame) > 2 and len(frame.columns) >= 2 and _looks_like_dates(frame.iloc[:, 0])
    note = f" (capped at {ctx.max_rows})" if len(frame) >= ctx.max_rows else ""
    return ToolOutcome("run_sql", True, f"{len(frame)} rows{note}", frame, chart)


def _looks_like_dates(series: pd.Series) -> bool:
    return bool(len(series)) and all(isinstance(v, dt.date) for v in series.head(5))


def list_values_impl(ctx: AgentContext, dimension: str, search: str = "") -> ToolOutcome:
    dim = _member_dimension(dimension, "list_values")
    if dim is None:
        raise ToolInputError("give a dimension, e.g. 'service'")
    if dim == "service_category":
        values = sorted(set(_service_categories(ctx).values()))
    else:
        values = queries.dimension_values(ctx.engine, dim, search=search or None, limit=200)
    frame = pd.DataFrame({dim: values})
    return ToolOutcome("list_values", True, f"{len(values)} {dim} values", frame)


def cost_breakdown_impl(
    ctx: AgentContext,
    dimension: str = "service",
    period: str = "last_30_days",
    top_n: int = 10,
    metric: Metric = "actual",
    filters: dict[str, str] | None = None,
) -> ToolOutcome:
    dim = normalize_dimension(dimension)
    p = _period(ctx, period)
    resolved = _filters(ctx, filters)
    totals = _breakdown_totals(ctx, period=p, dimension=dim, metric=metric, filters=resolved)
    scope = "" if not resolved else " where " + ", ".join(f"{k} = {', '.join(v)}" for k, v in resolved.items())
    if dim is None:
        parts = [f"{_money(r.cost)} {r.currency}" for r in totals.itertuples()] or ["0.00"]
        return ToolOutcome(
            "cost_breakdown", True, f"Total {metric} cost for {p.label}{scope}: {' + '.join(parts)}.", totals
        )
    grand = totals.groupby("currency")["cost"].transform("sum")
    totals["share_pct"] = (totals["cost"] / grand.where(grand != 0) * 100).round(1)
    top = totals.head(max(1, int(top_n))).reset_index(drop=True)
    lines = [f"Top {len(top)} {dim} by {metric} cost for {p.label}{scope}:"]
    lines += [f"{i + 1}. {r[dim]}: {_money(r.cost)} {r.currency} ({r.share_pct}%)" for i, r in top.iterrows()]
    if len(totals) > len(top):
        rest = totals.iloc[len(top) :]["cost"].sum()
        lines.append(f"The other {len(totals) - len(top)} {dim} values: {_money(rest)}.")
    return ToolOutcome("cost_breakdown", True, "\n".join(lines), top)


def cost_trend_impl(
    ctx: AgentContext,
    period: str = "last_30_days",
    grain: Literal["daily", "weekly", "monthly"] = "daily",
    dimension: str = "",
    top_n: int = 5,
    metric: Metric = "actual",
    filters: dict[str, str] | None = None,
) -> ToolOutcome:
    dim = _member_dimension(dimension, "cost_trend")
    if dim == "service_category":
        raise ToolInputError("trend by service_category is not supported; use dimension 'service'")
    p = _period(ctx, period)
    start, end = _inclusive(p)
    resolved = _filters(ctx, filters)
    frame = queries.cost_breakdown(
        ctx.engine,
        start=start,
        end=end,
        group_by=dim,
        grain=grain,
        metric=metric,
        filters=resolved,
        top_n=top_n if dim else None,
    )
    frame = frame.drop(columns="cost_exact")
    frame = frame.drop(columns="group") if dim is None else frame.rename(columns={"group": dim})
    total = frame["cost"].sum() if not frame.empty else 0.0
    summary = f"{metric.capitalize()} cost per {grain.removesuffix('ly') if grain != 'daily' else 'day'} for {p.label}"
    summary += f" ({len(frame)} rows, total {_money(total)})."
    if dim is None and len(frame) > 1:
        peak = frame.loc[frame["cost"].idxmax()]
        summary += f" Highest: {peak['period']} at {_money(peak['cost'])} {peak['currency']}."
    return ToolOutcome("cost_trend", True, summary, frame, chart=True)


def compare_periods_impl(
    ctx: AgentContext,
    period: str = "this_month",
    baseline: str = "previous",
    dimension: str = "service",
    top_n: int = 10,
    metric: Metric = "actual",
    filters: dict[str, str] | None = None,
) -> ToolOutcome:
    dim = _member_dimension(dimension, "compare_periods")
    if dim == "service_category":
        raise ToolInputError("compare by service_category is not supported; use dimension 'service'")
    current = _period(ctx, period)
    previous = current.previous() if baseline in ("", "previous", None) else _period(ctx, baseline)
    # "This month so far vs last month" compares like with like: the same days of the previous month.
    if (
        baseline in ("", "previous", None)
        and current.start.day == 1
        and current.end - dt.timedelta(days=1) == ctx.as_of()
    ):
        prev_start = (current.start - dt.timedelta(days=1)).replace(day=1)
        same_end = min(current.start, prev_start + dt.timedelta(days=current.days))
        previous = Period(prev_start, same_end, f"{prev_start}..{same_end - dt.timedelta(days=1)}")
    resolved = _filters(ctx, filters)
    if dim is None:
        cur = _breakdown_totals(ctx, period=current, dimension=None, metric=metric, filters=resolved)["cost"].sum()
        prev = _breakdown_totals(ctx, period=previous, dimension=None, metric=metric, filters=resolved)["cost"].sum()
        frame = pd.DataFrame(
            {
                "current_cost": [float(cur)],
                "previous_cost": [float(prev)],
                "change": [float(cur - prev)],
                "change_pct": [round(float((cur - prev) / prev * 100), 1) if prev else None],
            }
        )
    else:
        frame = queries.top_movers(
            ctx.engine,
            dimension=dim,
            current=_inclusive(current),
            previous=_inclusive(previous),
            metric=metric,
            filters=resolved,
            limit=max(1, int(top_n)),
        ).rename(columns={"group": dim})
        frame["change_pct"] = (frame["change_pct"] * 100).round(1)
        cur = _breakdown_totals(ctx, period=current, dimension=None, metric=metric, filters=resolved)["cost"].sum()
        prev = _breakdown_totals(ctx, period=previous, dimension=None, metric=metric, filters=resolved)["cost"].sum()
    lines = [f"{metric.capitalize()} cost {current.label}: {_money(cur)} vs {previous.label}: {_money(prev)}"]
    if prev:
        lines[0] += f" ({(cur - prev) / prev * 100:+.1f}%)."
    if dim is not None and not frame.empty:
        lines.append(f"Biggest changes by {dim}:")
        lines += [
            f"- {r[dim]}: {_money(r.previous_cost)} -> {_money(r.current_cost)} ({r.change:+,.2f})"
            for _, r in frame.head(5).iterrows()
        ]
    return ToolOutcome("compare_periods", True, "\n".join(lines), frame)


def explain_cost_change_impl(
    ctx: AgentContext, day: str = "latest", dimension: str = "", value: str = "", metric: Metric = "actual"
) -> ToolOutcome:
    as_of = ctx.as_of()
    dim = _member_dimension(dimension, "explain_cost_change")
    if dim == "service_category":
        dim, value = "service", value  # categories and services share names in the common cases
    member = _resolve_member(ctx, dim, value) if dim and value else ""
    level = dim if dim in ("subscription", "resource_group", "service") else None
    # Anomalies the detector recorded near that day (the detector may date a spike a day off).
    target = resolve_day(day, as_of) if day not in ("", "latest") else None
    near = agent_queries.AnomalyFilter(
        metric=metric,
        start=None if target is None else target - dt.timedelta(days=1),
        end=None if target is None else target + dt.timedelta(days=1),
        level=level if level and member else "",
        members=_stored_members(ctx, level, member) if level and member else [],
    )
    anomalies = agent_queries.anomalies(ctx.engine, near, limit=5, labelled=False)
    if target is None:
        target = anomalies[0].charge_date if anomalies else as_of
    filters = {dim: [member]} if dim and member else {}
    history = queries.cost_breakdown(
        ctx.engine,
        start=target - dt.timedelta(days=28),
        end=target,
        group_by="resource",
        grain="daily",
        metric=metric,
        filters=filters,
    )
    scope = f"{dim} {member}" if member else "total cost"
    if history.empty:
        return ToolOutcome("explain_cost_change", True, f"No {metric} cost for {scope} around {target}.")
    pivot = history.pivot_table(index="group", columns="period", values="cost", aggfunc="sum", fill_value=0.0)
    days = [target - dt.timedelta(days=i) for i in range(1, 29)]
    baseline = pivot.reindex(columns=days, fill_value=0.0).mean(axis=1)
    actual = pivot[target] if target in pivot.columns else pd.Series(0.0, index=pivot.index)
    contrib = pd.DataFrame({"resource": pivot.index, "expected": baseline.values, "actual": actual.values})
    contrib["delta"] = contrib["actual"] - contrib["expected"]
    total_expected, total_actual = contrib["expected"].sum(), contrib["actual"].sum()
    change = total_actual - total_expected
    direction = "up" if change >= 0 else "down"
    contrib = contrib.reindex(contrib["delta"].abs().sort_values(ascending=False).index).head(5)
    contrib = contrib.round(2).reset_index(drop=True)
    pct = f" ({change / total_expected * 100:+.0f}%)" if total_expected else ""
    lines = [
        f"On {target:%A %Y-%m-%d}, {metric} cost of {scope} was {_money(total_actual)} against a 28-day average "
        f"of {_money(total_expected)}: {direction} {_money(abs(change))}{pct}."
    ]
    for a in anomalies:
        lines.append(
            f"Anomaly #{a.anomaly_id} ({a.kind}, {a.status}) on {a.charge_date} for {a.level} "
            f"{(member or a.dimension_value)!r}: "
            f"actual {_money(float(a.actual))} vs expected {_money(float(a.expected or 0))} {a.currency or ''}, "
            f"impact {_money(float(a.impact or 0))}."
        )
    lines.append("Largest contributors by resource (actual vs 28-day average):")
    lines += [
        f"- {r.resource}: {_money(r.actual)} vs {_money(r.expected)} ({r.delta:+,.2f})" for r in contrib.itertuples()
    ]
    return ToolOutcome("explain_cost_change", True, "\n".join(lines), contrib)


def _forecast_rows(
    ctx: AgentContext,
    scope_type: str,
    scope_value: str,
    start: dt.date,
    end: dt.date,
    metric: str,
    currency: str | None = None,
):
    """The scope's latest forecast generation in one currency, days start..end. Forecasts are per billing currency
    and one run's currencies share a generation, so `currency` None takes the first currency (in code order) of
    the latest generation rather than adding two currencies' points up."""
    return agent_queries.latest_forecast(
        ctx.engine,
        scope_type=scope_type,
        scope_value=scope_value,
        start=start,
        end=end,
        metric=metric,
        currency=currency,
    )


def _forecast_currency(
    ctx: AgentContext, scope_type: str, scope_value: str, metric: str, filters: dict[str, list[str]] | None
) -> tuple[str | None, list[str]]:
    """The one currency a forecast answer is in, and every currency the scope has: its only one, else the largest
    by cost over the last 90 days (cost in other currencies is never converted or added); a scope without recent
    cost takes the currencies it has forecasts in."""
    as_of = ctx.as_of()
    recent = queries.cost_breakdown(
        ctx.engine, start=as_of - dt.timedelta(days=89), end=as_of, grain="monthly", metric=metric, filters=filters
    )
    by_cost = recent.assign(size=recent["cost"].abs()).groupby("currency")["size"].sum() if len(recent) else None
    if by_cost is not None and len(by_cost):
        ranked = sorted(by_cost.items(), key=lambda kv: (-(0.0 if pd.isna(kv[1]) else kv[1]), kv[0]))
        names = [c for c, _ in ranked]
        return names[0], sorted(names)
    stored = agent_queries.forecast_currencies(
        ctx.engine, scope_type=scope_type, scope_value=scope_value, metric=metric
    )
    return (stored[0] if stored else None), stored


def forecast_impl(
    ctx: AgentContext, period: str = "this_month", dimension: str = "", value: str = "", metric: Metric = "actual"
) -> ToolOutcome:
    as_of = ctx.as_of()
    target = (
        Period(as_of.replace(day=1), _next_month(as_of), f"{as_of:%Y-%m}")
        if period in ("", "this_month", "month_end", "end_of_month")
        else _forecast_period(period, as_of)
    )
    dim = normalize_dimension(dimension)
    member = _resolve_member(ctx, dim, value) if dim and value else ""
    scope_type, scope_value = ("total", "")
    if dim and member:
        stored = _stored_members(ctx, dim, member)
        # A name shared by several subscriptions has no one forecast: the run rate below covers them together.
        scope_type, scope_value = dim, stored[0] if len(stored) == 1 else member
    scope_filters = {dim: [member]} if dim and member else {}
    # One currency's actual and forecast: amounts in two billing currencies are never added up.
    currency, currencies = _forecast_currency(ctx, scope_type, scope_value, metric, scope_filters)
    in_currency = scope_filters | ({"currency": [currency]} if currency else {})
    last = target.end - dt.timedelta(days=1)
    actual_frame = pd.DataFrame(columns=["period", "cost"])
    if target.start <= as_of:
        actual_frame = queries.time_series(
            ctx.engine, start=target.start, end=min(as_of, last), metric=metric, filters=in_currency
        )
    rows = (
        _forecast_rows(
            ctx, scope_type, scope_value, max(target.start, as_of + dt.timedelta(days=1)), last, metric, currency
        )
        if currency
        else []
    )
    nan = float("nan")
    records = [(d, float(c), nan, nan, nan) for d, c in zip(actual_frame["period"], actual_frame["cost"], strict=True)]
    records += [
        (
            r.forecast_date,
            nan,
            float(r.point),
            float(r.lower_bound) if r.lower_bound is not None else nan,
            float(r.upper_bound) if r.upper_bound is not None else nan,
        )
        for r in rows
    ]
    frame = pd.DataFrame.from_records(records, columns=["date", "actual", "forecast", "lower", "upper"])
    scope = f"{dim} {member}" if dim and member else "total cost"
    unit = f" {currency}" if currency else ""
    note = ""
    if len(currencies) > 1:
        note = (
            f" Amounts are in {currency}, the largest of the scope's currencies ({', '.join(currencies)}) by cost;"
            " the others are not converted or added: ask for them one by one."
        )
    costs = actual_frame["cost"] if not actual_frame.empty else pd.Series(dtype=float)
    if costs.isna().any():
        # A day no report of this metric covers: its cost is unknown, not 0, so there is no total to add to.
        summary = (
            f"{metric.capitalize()} cost of {scope} is not available for part of {target.label} (only the other"
            f" metric's export covers some days), so there is no {metric} forecast total.{note}"
        )
        return ToolOutcome("forecast", True, summary, frame, chart=not frame.empty)
    spent = float(costs.sum())
    remaining_days = (last - max(as_of, target.start - dt.timedelta(days=1))).days
    if not rows:
        if remaining_days > 0 and target.start <= as_of:
            elapsed = (as_of - target.start).days + 1
            projected = spent / elapsed * target.days
            summary = (
                f"No stored forecast for {scope}. Run-rate projection for {target.label}: {_money(projected)}{unit} "
                f"({_money(spent)}{unit} so far over {elapsed} days).{note}"
            )
            return ToolOutcome("forecast", True, summary, frame, chart=not frame.empty)
        return ToolOutcome("forecast", True, f"No forecast stored for {scope} in {target.label}.{note}", frame)
    future = sum(float(r.point) for r in rows)
    low = sum(float(r.lower_bound or r.point) for r in rows)
    high = sum(float(r.upper_bound or r.point) for r in rows)
    summary = (
        f"Forecast of {metric} cost for {scope}, {target.label}: {_money(spent + future)}{unit} "
        f"(actual {_money(spent)} to {as_of} + forecast {_money(future)} for the remaining days; "
        f"range {_money(spent + low)} - {_money(spent + high)}; method {rows[0].method}).{note}"
    )
    return ToolOutcome("forecast", True, summary, frame, chart=True)


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _forecast_period(text: str, as_of: dt.date) -> Period:
    token = text.strip().lower().replace(" ", "_")
    if token == "next_month":
        start = _next_month(as_of)
        return Period(start, _next_month(start), f"{start:%Y-%m}")
    if token in ("next_30_days", "next_month_days"):
        return Period(as_of + dt.timedelta(days=1), as_of + dt.timedelta(days=31), "the next 30 days")
    if token in ("this_quarter", "quarter_end", "end_of_quarter"):
        start = dt.date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
        end = _period_end(start, "quarterly")
        return Period(start, end, f"{start.year}-Q{(start.month - 1) // 3 + 1}")
    return resolve_period(text, as_of)


def budget_status_impl(ctx: AgentContext, name: str = "") -> ToolOutcome:
    as_of = ctx.as_of()
    budgets = agent_queries.enabled_budgets(ctx.engine, name=name)
    alerted = agent_queries.highest_actual_alerts(ctx.engine)
    if not budgets:
        return ToolOutcome("budget_status", True, "No budgets are defined" + (f" matching {name!r}." if name else "."))
    out = []
    for b in budgets:
        start = _period_start(as_of, b.period)
        end = _period_end(start, b.period)
        scope = f"{b.scope_type} {b.scope_value}".strip()
        # The evaluator's own measure: scope and every filter by natural key (a resource group within its
        # subscription), in the budget's currency only.
        with ctx.engine.connect() as conn:
            spent = budget_store.spend(conn, b._mapping, start, as_of)
        if b.scope_type == "subscription":
            # An id no subscription carries (or a name saved before ids) never alerts: say so, not just "0 spent".
            scope = f"subscription {b.subscription}" if b.subscription else f"{scope} (no such subscription id)"
        if b.filters:
            scope += " with " + "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(b.filters.items()))
        if b.scope_candidates is not None:
            scope += " (subscription not chosen yet: not evaluated)"
        scope_type = b.scope_type if b.scope_type != "tag" else f"tag:{b.tag_key}"
        rows = _forecast_rows(
            ctx,
            scope_type if b.scope_type != "total" else "total",
            b.scope_value,
            as_of + dt.timedelta(days=1),
            end - dt.timedelta(days=1),
            b.metric,
            currency=b.currency or None,
        )
        if b.filters or b.scope_type == "resource_group":
            rows = []  # no analytics series is this budget's: the run rate, not another scope's forecast
        elapsed = (as_of - start).days + 1
        remaining = (end - as_of).days - 1
        if rows and len(rows) >= remaining:
            projected = spent + sum(float(r.point) for r in rows)
            basis = "forecast"
        else:
            projected = spent / elapsed * (end - start).days
            basis = "run rate"
        amount = float(b.amount)
        used = spent / amount * 100
        status = "over budget" if used >= 100 else ("at risk" if projected > amount else "on track")
        out.append(
            {
                "budget": b.name,
                "scope": scope,
                "period": f"{b.period} from {start}",
                "amount": amount,
                "currency": b.currency,
                "spent": round(spent, 2),
                "used_pct": round(used, 1),
                "projected": round(projected, 2),
                "projected_pct": round(projected / amount * 100, 1),
                "basis": basis,
                "highest_alert_pct": alerted.get(b.budget_id),
                "status": status,
            }
        )
    frame = pd.DataFrame(out)
    lines = [f"Budget status as of {as_of}:"]
    lines += [
        f"- {r['budget']} ({r['scope']}, {r['period']}): spent {_money(r['spent'])} of {_money(r['amount'])} "
        f"{r['currency']} ({r['used_pct']}%), projected {_money(r['projected'])} ({r['projected_pct']}%, "
        f"{r['basis']}): {r['status']}."
        for r in out
    ]
    return ToolOutcome("budget_status", True, "\n".join(lines), frame)


def _period_start(day: dt.date, period: str) -> dt.date:
    if period == "monthly":
        return day.replace(day=1)
    if period == "quarterly":
        return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return dt.date(day.year, 1, 1)


def _period_end(start: dt.date, period: str) -> dt.date:
    months = {"monthly": 1, "quarterly": 3}.get(period, 12)
    index = start.year * 12 + start.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def untagged_share_impl(ctx: AgentContext, tag_key: str = "", period: str = "last_30_days") -> ToolOutcome:
    p = _period(ctx, period)
    start, end = _inclusive(p)
    keys = [tag_key.strip().lower().removeprefix("tag:")] if tag_key else queries.tag_keys(ctx.engine)
    if not keys:
        return ToolOutcome("untagged_share", True, "No tags are recorded in the mart.")
    out = []
    for key in keys:
        frame = queries.cost_breakdown(ctx.engine, start=start, end=end, group_by=f"tag:{key}", grain="daily")
        total = float(frame["cost"].sum())
        untagged = float(frame.loc[frame["group"] == queries.UNTAGGED, "cost"].sum())
        out.append(
            {
                "tag_key": key,
                "untagged_cost": round(untagged, 2),
                "total_cost": round(total, 2),
                "untagged_pct": round(untagged / total * 100, 1) if total else None,
            }
        )
    frame = pd.DataFrame(out).sort_values("untagged_pct", ascending=False, ignore_index=True)
    lines = [f"Cost without a value for each tag key, {p.label}:"]
    lines += [
        f"- {r.tag_key}: {_money(r.untagged_cost)} of {_money(r.total_cost)} ({r.untagged_pct}%) untagged"
        for r in frame.itertuples()
    ]
    return ToolOutcome("untagged_share", True, "\n".join(lines), frame)


def _anomaly_filter(
    ctx: AgentContext, *, period: str, dimension: str, value: str, kind: str, status: str, metric: str
) -> tuple[agent_queries.AnomalyFilter, Period | None]:
    p = None if period in ("", "all", "all_time") else _period(ctx, period)
    dim = _member_dimension(dimension, "the anomaly tools")
    members = _stored_members(ctx, dim, _resolve_member(ctx, dim, value)) if dim and value else []
    found = agent_queries.AnomalyFilter(
        metric=metric,
        start=None if p is None else p.start,
        end=None if p is None else p.end - dt.timedelta(days=1),
        level=dim or "",
        members=members,
        kind=kind.strip().lower() if kind else "",
        status=status.strip().lower() if status else "",
    )
    return found, p


def list_anomalies_impl(
    ctx: AgentContext,
    period: str = "all",
    dimension: str = "",
    value: str = "",
    kind: str = "",
    status: str = "",
    top_n: int = 50,
    metric: Metric = "actual",
) -> ToolOutcome:
    found, p = _anomaly_filter(
        ctx, period=period, dimension=dimension, value=value, kind=kind, status=status, metric=metric
    )
    rows = agent_queries.anomalies(ctx.engine, found, limit=max(1, min(int(top_n), ctx.max_rows)))
    frame = pd.DataFrame(
        [r._asdict() for r in rows],
        columns=[
            "anomaly_id",
            "charge_date",
            "level",
            "dimension_value",
            "kind",
            "status",
            "expected",
            "actual",
            "impact",
            "currency",
            "severity",
        ],
    )
    for col in ("expected", "actual", "impact", "severity"):
        frame[col] = pd.to_numeric(frame[col]).astype(float)
    scope = p.label if p else "all time"
    if frame.empty:
        return ToolOutcome("list_anomalies", True, f"No {metric} cost anomalies recorded for {scope}.", frame)
    lines = [f"{len(frame)} {metric} cost anomalies for {scope}, largest impact first:"]
    lines += [
        f"- #{r.anomaly_id} {r.charge_date} {r.level} {r.dimension_value!r}: {r.kind}, {r.status}, actual "
        f"{_money(r.actual)} vs expected {_money(r.expected)} {r.currency}, impact {_money(r.impact)}"
        for r in frame.head(10).itertuples()
    ]
    return ToolOutcome("list_anomalies", True, "\n".join(lines), frame)


def count_anomalies_impl(
    ctx: AgentContext,
    period: str = "all",
    group_by: str = "",
    dimension: str = "",
    value: str = "",
    kind: str = "",
    status: str = "",
    metric: Metric = "actual",
) -> ToolOutcome:
    found, p = _anomaly_filter(
        ctx, period=period, dimension=dimension, value=value, kind=kind, status=status, metric=metric
    )
    key = group_by.strip().lower()
    group = key
    if key and key not in agent_queries.ANOMALY_GROUPS:
        # "by service": the members of that level.
        dim = _member_dimension(key, "count_anomalies")
        found = dataclasses.replace(found, group_level=dim)
        key, group = dim, "level_member"
    expr = group in agent_queries.ANOMALY_GROUPS or group == "level_member"
    columns, rows, impacts = agent_queries.count_anomalies(ctx.engine, found, group=group if expr else "")
    frame = pd.DataFrame(rows, columns=columns).rename(columns={"grp": key})
    scope = p.label if p else "all time"
    total = int(frame["anomalies"].sum()) if not frame.empty else 0
    impact = ", ".join(f"{_money(float(v or 0))} {c or ''}".strip() for c, v in impacts) or "0.00"
    lines = [f"{total} {metric} cost anomalies for {scope} (total impact {impact})."]
    if expr:
        lines += [f"- {r[key]}: {r['anomalies']} ({r['open']} open)" for _, r in frame.head(20).iterrows()]
    return ToolOutcome("count_anomalies", True, "\n".join(lines), frame)


def average_cost_impl(
    ctx: AgentContext,
    period: str = "last_30_days",
    grain: Literal["daily", "weekly", "monthly"] = "daily",
    metric: Metric = "actual",
    filters: dict[str, str] | None = None,
) -> ToolOutcome:
    p = _period(ctx, period)
    start, end = _inclusive(p)
    resolved = _filters(ctx, filters)
    series = queries.cost_breakdown(
        ctx.engine, start=start, end=end, group_by=None, grain=grain, metric=metric, filters=resolved
    )
    unit = {"daily": "day", "weekly": "week", "monthly": "month"}[grain]
    scope = "" if not resolved else " where " + ", ".join(f"{k} = {', '.join(v)}" for k, v in resolved.items())
    if series.empty:
        return ToolOutcome("average_cost", True, f"No {metric} cost for {p.label}{scope}.")
    # Over the periods that have cost: a day before the first data (or after the latest) is not a zero-cost day.
    stats = (
        series.groupby("currency")["cost"]
        .agg(periods="count", total="sum", average="mean", median="median", lowest="min", highest="max")
        .reset_index()
    )
    stats.insert(1, "per", unit)
    lines = [
        f"Average {metric} cost per {unit} for {p.label}{scope}: {_money(r.average)} {r.currency} over {r.periods} "
        f"{unit}s with cost (total {_money(r.total)}; median {_money(r.median)}, lowest {_money(r.lowest)}, "
        f"highest {_money(r.highest)})."
        for r in stats.itertuples()
    ]
    return ToolOutcome("average_cost", True, "\n".join(lines), stats)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


def _amount(value: Any) -> str:
    return "not available" if value is None else _money(float(value))


def savings_summary_impl(ctx: AgentContext, period: str = "last_month") -> ToolOutcome:
    p = _period(ctx, period)
    start, end = _inclusive(p)
    rows = []
    lines = [f"Savings for {p.label} (list vs contracted vs effective cost; 'not available' = the loaded sources "
             "do not carry that column, e.g. Azure exports have no ContractedCost):"]  # fmt: skip
    for currency in waste.currencies(ctx.engine, start=start, end=end):
        s = waste.savings_summary(ctx.engine, start=start, end=end, currency=currency)
        rows.append(
            {
                "currency": currency,
                "list_cost": s.list_cost,
                "contracted_cost": s.contracted_cost,
                "effective_cost": s.effective_cost,
                "negotiated_savings": s.negotiated_savings,
                "commitment_savings": s.commitment_savings,
                "effective_savings_rate_pct": _pct(s.effective_savings_rate),
                "commitment_used": s.commitment_used,
                "commitment_unused": s.commitment_unused,
                "commitment_utilisation_pct": _pct(s.commitment_utilisation),
            }
        )
        rate = "not available" if s.effective_savings_rate is None else f"{s.effective_savings_rate * 100:.1f}%"
        use = "not available" if s.commitment_utilisation is None else f"{s.commitment_utilisation * 100:.1f}%"
        lines.append(
            f"- {currency}: effective savings rate {rate}; negotiated savings {_amount(s.negotiated_savings)}, "
            f"commitment savings {_amount(s.commitment_savings)}; commitment utilisation {use} "
            f"(unused {_amount(s.commitment_unused)}); effective cost {_amount(s.effective_cost)}."
        )
    if not rows:
        return ToolOutcome("savings_summary", True, f"No cost for {p.label}.")
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column != "currency" and not column.endswith("_pct"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return ToolOutcome("savings_summary", True, "\n".join(lines), frame)


_WASTE_KINDS = {"all", "orphans", "zero_usage", "started", "stopped", *waste.RULES_BY_KIND}
_WASTE_ALIASES = {"orphan": "orphans", "idle": "orphans", "unattached_disks": "unattached_disk", "disk": "unattached_disk",
                  "disks": "unattached_disk", "public_ip": "idle_public_ip", "ip": "idle_public_ip",
                  "ips": "idle_public_ip", "stopped_vms": "stopped_vm", "vm": "stopped_vm", "vms": "stopped_vm",
                  "zero_quantity": "zero_usage", "without_usage": "zero_usage", "no_usage": "zero_usage"}  # fmt: skip


def waste_list_impl(ctx: AgentContext, kind: str = "all", month: str = "last_month", top_n: int = 25) -> ToolOutcome:
    key = kind.strip().lower().replace(" ", "_").replace("-", "_") or "all"
    key = _WASTE_ALIASES.get(key, key)
    if key not in _WASTE_KINDS:
        raise ToolInputError(f"unknown waste kind {kind!r}; use one of {', '.join(sorted(_WASTE_KINDS))}")
    p = _period(ctx, month)
    first = p.start.replace(day=1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    rows: list[dict[str, Any]] = []
    for currency in waste.currencies(ctx.engine, start=first, end=last):
        if key in ("all", "orphans") or key in waste.RULES_BY_KIND:
            kinds = tuple(waste.RULES_BY_KIND) if key in ("all", "orphans") else (key,)
            for o in waste.orphans(ctx.engine, month=first, currency=currency, kinds=kinds, limit=top_n):
                rows.append({"finding": o.label, "resource_id": o.resource_id, "resource_group": o.resource_group,
                             "detail": o.meters, "monthly_cost": o.monthly_cost, "currency": currency,
                             "link": o.link})  # fmt: skip
        if key in ("all", "zero_usage"):
            for z in waste.zero_usage(ctx.engine, month=first, currency=currency, limit=top_n):
                rows.append({"finding": "Cost without usage", "resource_id": z.resource_id,
                             "resource_group": z.resource_group, "detail": f"{z.meter_category} / {z.meter_name}",
                             "monthly_cost": z.monthly_cost, "currency": currency, "link": z.link})  # fmt: skip
        if key in ("all", "started", "stopped"):
            for c in waste.cost_changes(ctx.engine, month=first, currency=currency, limit=top_n * 2):
                if key != "all" and c.event != key:
                    continue
                rows.append({"finding": f"Cost {c.event}", "resource_id": c.resource_id,
                             "resource_group": c.resource_group, "detail": f"{c.service_name} on {c.event_date}",
                             "monthly_cost": c.monthly_cost, "currency": currency, "link": c.link})  # fmt: skip
    label = f"{first:%B %Y}"
    if not rows:
        return ToolOutcome("waste_list", True, f"No {key.replace('_', ' ')} waste findings in {label}.")
    frame = pd.DataFrame(rows)
    frame["monthly_cost"] = pd.to_numeric(frame["monthly_cost"], errors="coerce")
    frame = frame.sort_values("monthly_cost", ascending=False, na_position="last", ignore_index=True).head(top_n)
    totals = frame.groupby(["finding", "currency"])["monthly_cost"].agg(["count", "sum"]).reset_index()
    lines = [f"Waste findings in {label} ({key.replace('_', ' ')}), largest monthly cost first:"]
    lines += [f"- {r.finding}: {r['count']} resources, {_money(r['sum'])} {r.currency} this month"
              for _, r in totals.iterrows()]  # fmt: skip
    lines.append("Each row links to the resource in the Azure portal where the id is an Azure resource id.")
    return ToolOutcome("waste_list", True, "\n".join(lines), frame)


# --- LangChain wiring -------------------------------------------------------------------------
_EXPECTED_ERRORS = (ToolInputError, UnsafeSQLError, PeriodError, queries.QueryError)


def _governed(ctx: AgentContext, name: str, impl: Callable[..., ToolOutcome]) -> Callable[..., tuple[str, ToolOutcome]]:
    """Run one tool call: capture its SQL, time it, and turn expected failures into text the model can act on."""

    def call(**kwargs: Any) -> tuple[str, ToolOutcome]:
        t0 = time.perf_counter()
        with capturing() as statements:
            try:
                outcome = impl(ctx, **kwargs)
            except _EXPECTED_ERRORS as exc:
                outcome = ToolOutcome(name, False, f"error: {exc}")
            except DBAPIError as exc:
                code = getattr(exc.orig, "pgcode", None)
                reason = "the query ran past the statement timeout" if code == "57014" else "the database refused it"
                first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
                outcome = ToolOutcome(name, False, f"error: {reason}: {first[:300]}")
                log.warning("agent tool %s failed in the database: %s", name, first)
        outcome.statements = list(statements)
        outcome.duration_ms = int((time.perf_counter() - t0) * 1000)
        content = outcome.summary
        if outcome.frame is not None and outcome.ok and name not in ("list_tables", "describe_table"):
            content += "\n\nrows:\n" + _table_text(outcome.frame)
        return content, outcome

    return call


def _tool(ctx: AgentContext, name: str, impl: Callable[..., ToolOutcome], doc: str, schema: type) -> BaseTool:
    return StructuredTool.from_function(
        func=_governed(ctx, name, impl),
        name=name,
        description=doc,
        args_schema=schema,
        response_format="content_and_artifact",
    )


def build_tools(ctx: AgentContext) -> list[BaseTool]:
    """Every tool the agent may call; one set for the UI, the evaluation and the tests."""
    from backend.agent import schemas as s

    period_help = "period such as last_30_days, this_month, last_month, 2025-03, 2025-03-01..2025-03-15"
    return [
        _tool(
            ctx, "list_tables", list_tables_impl, "List the mart tables and views you may query with run_sql.", s.NoArgs
        ),
        _tool(
            ctx,
            "describe_table",
            describe_table_impl,
            "Describe a mart table or view: its grain and what each column means, with units and currency.",
            s.DescribeTable,
        ),
        _tool(
            ctx,
            "run_sql",
            run_sql_impl,
            "Run ONE read-only PostgreSQL SELECT over the mart tables from list_tables (schema-qualify as mart.x). "
            f"Writes, DDL, several statements and non-plain functions are refused; a LIMIT of at most {ctx.max_rows} "
            "is applied. Prefer the specific cost tools when they fit.",
            s.RunSql,
        ),
        _tool(
            ctx,
            "list_values",
            list_values_impl,
            "List the names of a dimension's members (services, subscriptions, resource groups, regions, tag "
            "values as tag:<key>), optionally filtered by a search string.",
            s.ListValues,
        ),
        _tool(
            ctx,
            "cost_breakdown",
            cost_breakdown_impl,
            f"Total cost over a {period_help}, grouped by a dimension (service, service_category, subscription, "
            "resource_group, resource, region, meter, pricing_model, charge_category, tag:<key>) or 'total'; "
            "returns the top N with their share. Use it for 'top N', 'how much', 'by X' questions.",
            s.CostBreakdown,
        ),
        _tool(
            ctx,
            "cost_trend",
            cost_trend_impl,
            f"Cost over time (daily, weekly or monthly) for a {period_help}, optionally split by a dimension "
            "(top N members, the rest as 'Other'). Use it for trends and charts.",
            s.CostTrend,
        ),
        _tool(
            ctx,
            "compare_periods",
            compare_periods_impl,
            "Compare cost between two periods (baseline 'previous' = the period just before, same length) and list "
            "the members of a dimension whose cost changed most. dimension 'total' compares totals.",
            s.ComparePeriods,
        ),
        _tool(
            ctx,
            "explain_cost_change",
            explain_cost_change_impl,
            "Explain a cost spike or drop on one day (YYYY-MM-DD, 'latest', 'yesterday' or a weekday name such as "
            "'tuesday' = the most recent one): recorded anomalies, and the resources that moved most against their "
            "28-day average, optionally within one member of a dimension (e.g. service 'Storage').",
            s.ExplainCostChange,
        ),
        _tool(
            ctx,
            "forecast",
            forecast_impl,
            "Forecast cost to the end of this_month (default), next_month, this_quarter or next_30_days, for the "
            "total or one member (service, subscription, ...): actual so far plus the stored forecast.",
            s.Forecast,
        ),
        _tool(
            ctx,
            "budget_status",
            budget_status_impl,
            "Status of budgets: spent so far this period, percent used, projected end-of-period spend, alerts. "
            "name matches the budget's name or, for subscription budgets, the subscription's name.",
            s.BudgetStatus,
        ),
        _tool(
            ctx,
            "untagged_share",
            untagged_share_impl,
            f"Share of cost without a value for a tag key (all keys when empty) over a {period_help}.",
            s.UntaggedShare,
        ),
        _tool(
            ctx,
            "list_anomalies",
            list_anomalies_impl,
            "List the cost anomalies the detector recorded (all time by default, or in a period), largest impact "
            "first: day, level and member, kind, status, actual vs expected, impact. Optionally one level/member.",
            s.ListAnomalies,
        ),
        _tool(
            ctx,
            "count_anomalies",
            count_anomalies_impl,
            "Count recorded cost anomalies (all time by default, or in a period), optionally per level, member, "
            "kind, status, day or month, or per member of a level (group_by='service'); with their total impact.",
            s.CountAnomalies,
        ),
        _tool(
            ctx,
            "savings_summary",
            savings_summary_impl,
            f"Savings over a {period_help}: list vs contracted vs effective cost, negotiated savings (list - "
            "contracted), commitment savings (contracted - effective), effective savings rate and reservation / "
            "savings plan utilisation (used vs unused); 'not available' where the data lacks the column.",
            s.SavingsSummary,
        ),
        _tool(
            ctx,
            "waste_list",
            waste_list_impl,
            "Waste findings of a month with each resource's monthly cost and portal link: orphan-looking resources "
            "(unattached managed disks, idle public IPs, stopped-but-billed VMs), cost without usage (zero "
            "quantity), and resources whose cost started or stopped.",
            s.WasteList,
        ),
        _tool(
            ctx,
            "average_cost",
            average_cost_impl,
            f"Average (and median, lowest, highest) cost per day, week or month over a {period_help}, "
            "optionally filtered; counted over the days (weeks, months) that have cost.",
            s.AverageCost,
        ),
    ]
