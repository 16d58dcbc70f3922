"""The cost readers for the pages: freshness, explorer, overview and anomalies, typed rows in, DataFrames out.

Every function takes an engine first, so pages pass the cached reader (or the owner, for writes and
for tables the reader role cannot see) and tests pass their own. The SQL lives in backend.mart.queries
and backend.mart.analytics (the latest run in backend.mart.history); caching lives in app/ui.py, keyed by the mart's data version. The budget
forms are app.budget_forms, the run history's readers app.run_history.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
import sqlalchemy as sa

from backend.mart import analytics, history, queries
from backend.mart.model import BY_NAME

log = logging.getLogger(__name__)

METRICS = ("actual", "amortized")
GRAINS = ("daily", "weekly", "monthly")
TAG_PREFIX = queries.TAG_PREFIX
DIMENSIONS = tuple(queries.dimensions())
_TITLES = {"resource_group": "Resource group", "pricing_model": "Pricing model",
           "charge_category": "Charge category", "billing_account": "Billing account"}  # fmt: skip


def title(name: str) -> str:
    """How a dimension (or "tag:<key>") is named on screen."""
    if name.startswith(TAG_PREFIX):
        return f"Tag: {name[len(TAG_PREFIX) :]}"
    return _TITLES.get(name, name.replace("_", " ").capitalize())


def rows_frame(rows: Sequence[Any], cls: type, *, dates: Sequence[str] = ()) -> pd.DataFrame:
    """Typed backend rows as a DataFrame with the dataclass's columns (also when empty); money (Decimal) as
    float, since pages chart and format floats; `dates` as datetime64 for the charts. The budget forms and the
    run history shape their rows with it too."""
    columns = [f.name for f in dataclasses.fields(cls)]
    frame = pd.DataFrame([[getattr(r, c) for c in columns] for r in rows], columns=columns)
    for col in frame.columns:
        present = frame[col].dropna() if frame[col].dtype == object else ()
        if len(present) and isinstance(present.iloc[0], Decimal):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in dates:
        frame[col] = pd.to_datetime(frame[col])
    return frame


CONVERTED = " (converted)"  # "EUR (converted)": every billing currency, converted with the imported rates


def converted_choice(reporting_currency: str) -> str:
    return f"{reporting_currency}{CONVERTED}"


def converted_to(currency: str | None) -> str | None:
    """The reporting currency when `currency` is the converted choice, else None."""
    return currency[: -len(CONVERTED)] if currency and currency.endswith(CONVERTED) else None


def _currency(currency: str | None) -> dict[str, list[str]]:
    """One billing currency's rows; the converted choice reads them all (their converted columns)."""
    return {"currency": [currency]} if currency and not converted_to(currency) else {}


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
    demo: bool = False  # the mart shows the generated demo estate (no real source has delivered)
    reporting_currency: str | None = None  # gold converts to it (FX rates imported), else None

    @property
    def empty(self) -> bool:
        return self.as_of is None

    @property
    def version(self) -> str:
        """Changes whenever a load or run succeeds: part of every cache key so caches never go stale."""
        return f"{self.last_loaded_at}:{self.last_run_id}"


# Every charge day the mart can hold, in whole months so the currency totals read the small monthly aggregate.
_ALL_MONTHS = (dt.date(1970, 1, 1), dt.date(2999, 12, 31))


def _currencies_by_cost(engine: sa.Engine) -> list[str]:
    """Every currency in the mart, the biggest (by absolute cost) first."""
    by = queries.cost_breakdown(engine, start=_ALL_MONTHS[0], end=_ALL_MONTHS[1], group_by="currency", grain="monthly")
    return by.groupby("group")["cost"].sum().abs().sort_values(ascending=False).index.tolist()


def data_status(engine: sa.Engine) -> DataStatus:
    # Three independent reads on their own pooled connections: every page starts with this, so they overlap
    # (each mostly waits on Postgres) instead of queueing.
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="costlake-status") as pool:
        fresh_f = pool.submit(queries.freshness, engine)
        run_f = pool.submit(history.latest_run, engine, status="succeeded")
        currencies_f = pool.submit(_currencies_by_cost, engine)
        demo_f = pool.submit(demo_shown, engine)
        reporting_f = pool.submit(queries.reporting_currency, engine)
        fresh, run, currencies = fresh_f.result(), run_f.result(), currencies_f.result()
    status = DataStatus(
        as_of=fresh.data_as_of,
        last_loaded_at=fresh.last_successful_load_at,
        demo=demo_f.result(),
        reporting_currency=reporting_f.result(),
    )
    if fresh.fact_months:
        status.first_date = dt.date.fromisoformat(f"{fresh.fact_months[0]}-01")
    if run:
        status.last_run_id, status.last_run_at = run.run_id, run.finished_at
    if status.as_of is not None:
        status.currencies = currencies
    return status


def demo_shown(engine: sa.Engine) -> bool:
    from backend.mart.demo import demo_loaded

    with engine.connect() as conn:
        return demo_loaded(conn)


def mart_freshness(engine: sa.Engine) -> pd.DataFrame:
    """Per mart area: the latest data day and when it was last written."""
    fresh = queries.freshness(engine)
    cost = {
        "area": "cost (fact + aggregates)",
        "latest": str(fresh.data_as_of or ""),
        "written_at": fresh.last_successful_load_at,
        "note": f"last load {fresh.last_load_status or 'never'}; months {', '.join(fresh.fact_months[-3:])}",
    }
    areas = [
        {"area": a.area, "latest": str(a.latest or ""), "written_at": a.written_at, "note": ""}
        for a in analytics.freshness(engine)
    ]
    return pd.DataFrame([cost, *areas], columns=["area", "latest", "written_at", "note"])


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
        grain=grain,
        metric=metric,
        filters={k: list(v) for k, v in (filters or {}).items() if v},
    )
    frame["period"] = pd.to_datetime(frame["period"])
    return frame


def daily_total(
    engine: sa.Engine, *, start: dt.date, end: dt.date, metric: str = "actual", currency: str | None = None
) -> pd.DataFrame:
    """Total cost per day: columns day (datetime64), cost (float)."""
    if target := converted_to(currency):
        frame = queries.cost_breakdown(engine, start=start, end=end, metric=metric, converted_to=target)
    else:
        frame = queries.time_series(engine, start=start, end=end, metric=metric, filters=_currency(currency))
    out = frame.groupby("period", as_index=False)["cost"].sum(min_count=1).rename(columns={"period": "day"})
    out["day"] = pd.to_datetime(out["day"])
    return out


# --- overview -----------------------------------------------------------------------------------------


def kpis(engine: sa.Engine, *, as_of: dt.date, currency: str | None, metric: str = "actual") -> queries.Kpis:
    """Month to date vs the same point last month, in one currency (sums never mix currencies; the converted
    choice sums the converted costs, all in the reporting currency)."""
    return queries.kpis(
        engine, metric=metric, as_of=as_of, filters=_currency(currency), converted_to=converted_to(currency)
    )


def month_end_forecast(
    engine: sa.Engine, *, as_of: dt.date, metric: str = "actual", currency: str | None = None
) -> analytics.MonthEndForecast | None:
    """The analytics step's month-end total for the month holding `as_of` (None before the first one, and for
    the converted choice: forecasts are per billing currency)."""
    if converted_to(currency):
        return None
    return analytics.month_end_forecast(engine, as_of=as_of, metric=metric, currency=currency)


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
        converted_to=converted_to(currency),
    )
    frame["change_pct"] = frame["change_pct"] * 100
    return frame


# --- anomalies (backend.mart.analytics) ---------------------------------------------------------------

NONE_LABEL = "(none)"  # how the member with an empty natural key is shown


def anomalies(engine: sa.Engine, *, status: str | None = "open", since: dt.date | None = None) -> pd.DataFrame:
    frame = rows_frame(analytics.list_anomalies(engine, status=status, since=since), analytics.Anomaly)
    frame["dimension_value"] = frame["dimension_value"].replace("", NONE_LABEL)
    return frame


def _natural(value: str) -> str:
    return "" if value == NONE_LABEL else value


def _series_currency(currency: str | None) -> str | None:
    # "" is an anomaly whose currency is unknown (or from before detection was per currency): the member's
    # only currency then stands for it, and a member with several is refused rather than summed.
    return currency or None


def series_for(
    engine: sa.Engine, *, level: str, value: str, metric: str, start: dt.date, end: dt.date, currency: str | None
) -> pd.DataFrame:
    """The daily series an anomaly was found in, in its billing currency (a member billed in two currencies is
    two series, never a sum): columns day (datetime64), cost (float); days the metric is not available have no
    row. `currency` None or "" takes the member's only currency (ValueError when it has several)."""
    points = analytics.series(
        engine,
        level=level,
        value=_natural(value),
        metric=metric,
        start=start,
        end=end,
        currency=_series_currency(currency),
    )
    return rows_frame(points, analytics.DailyCost, dates=("day",))


def anomaly_band(engine: sa.Engine, *, level: str, value: str, metric: str, currency: str | None) -> pd.DataFrame:
    """Every detection stored for one series (expected value and band per day) in `currency`, for the chart;
    None or "" reads every currency's detections of the member."""
    points = analytics.band(engine, level=level, value=_natural(value), metric=metric, currency=currency or None)
    return rows_frame(points, analytics.BandPoint, dates=("day",))


set_anomaly_status = analytics.set_anomaly_status


def contributors_frame(contributors: Any) -> pd.DataFrame:
    if isinstance(contributors, str):
        contributors = json.loads(contributors or "[]")
    return pd.DataFrame(list(contributors or []))


def known_dimension(name: str) -> bool:
    return name in BY_NAME or (name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX))
