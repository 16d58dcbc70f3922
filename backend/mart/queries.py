"""Typed read queries the pages and the agent use (KPIs, explorer breakdowns, time series, top movers, filter values).

Every function takes an Engine on the read-only role (`backend.mart.db.reader_engine`). SQL is built
only from whitelisted identifiers; user values are always bound parameters. Queries read the
aggregates (agg_cost_daily / agg_cost_monthly / agg_cost_by_tag) whenever the dimensions involved
allow it, and the fact table only for resource / meter / tag drill-downs.

Dimensions are addressed by name: the names in `backend.mart.model.DIMENSIONS` (subscription,
resource_group, service, region, resource, meter, ...) or "tag:<key>". Filter values and group
labels are dimension labels (what `dimension_values` returns; "(none)" for empty, "untagged" for a
resource without the tag key).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import pandas as pd
import sqlalchemy as sa

from backend.mart.model import BY_NAME, DIMENSIONS

log = logging.getLogger(__name__)

Metric = Literal["actual", "amortized"]
Grain = Literal["daily", "weekly", "monthly"]
Filters = Mapping[str, Sequence[str]]  # dimension name -> selected labels (OR within, AND across)

UNTAGGED = "untagged"
TAG_PREFIX = "tag:"
_METRIC_COLUMN = {"actual": "actual_cost", "amortized": "amortized_cost"}
_PERIOD = {
    "daily": "{col}",
    "weekly": "date_trunc('week', {col})::date",
    "monthly": "date_trunc('month', {col})::date",
}


def _total(expr: str, where: str = "") -> str:
    """SQL sum of a cost that is null ("not available") when any row lacks it: actual and amortized cost
    are null where no report of that metric covers a scope and day, and a sum that skipped them would
    pass a partial figure for the total."""
    only = f" FILTER (WHERE {where})" if where else ""
    return f"CASE WHEN count(*){only} = count({expr}){only} THEN sum({expr}){only} END"


class QueryError(ValueError):
    """A request the mart cannot answer (unknown dimension, bad range); the message is safe to show."""


@dataclass(frozen=True)
class Kpis:
    """Overview numbers. Money is exact; `currencies` lists what the sums mix (one entry = no mixing)."""

    metric: str
    data_as_of: dt.date | None  # the last charge day in the mart
    # None: the metric is not available for (part of) the period (e.g. only actual-cost exports loaded).
    month_to_date: Decimal | None
    last_month_same_point: Decimal | None  # previous month from its 1st to the same day of month
    last_month_total: Decimal | None
    change_vs_last_month: float | None  # ratio, None when last month had no cost to that point
    currencies: list[str]

    @property
    def available(self) -> bool:
        """Whether the metric is known for this month to date (a report of it covers every day)."""
        return self.month_to_date is not None


@dataclass(frozen=True)
class Freshness:
    data_as_of: dt.date | None
    last_load_at: dt.datetime | None
    last_load_status: str | None
    last_successful_load_at: dt.datetime | None
    fact_months: list[str]


def _metric(metric: str) -> str:
    try:
        return _METRIC_COLUMN[metric]
    except KeyError:
        raise QueryError(f"metric must be one of {sorted(_METRIC_COLUMN)}, not {metric!r}") from None


def _check_dimension(name: str) -> None:
    if name.startswith(TAG_PREFIX):
        if not name[len(TAG_PREFIX) :]:
            raise QueryError("tag dimension needs a key, e.g. 'tag:env'")
        return
    if name not in BY_NAME:
        raise QueryError(f"unknown dimension {name!r}; choose from {sorted(BY_NAME)} or 'tag:<key>'")


class _Query:
    """Accumulates joins, WHERE clauses and bound parameters for one SELECT over a cost table."""

    def __init__(self, table: str, alias: str = "f") -> None:
        self.table, self.alias = table, alias
        self.joins: list[str] = []
        self.where: list[str] = []
        self.params: dict[str, object] = {}
        self._joined: set[str] = set()

    def bind(self, value: object) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return name

    def join_dimension(self, name: str) -> str:
        dim = BY_NAME[name]
        alias = f"d_{name}"
        if alias not in self._joined:
            self.joins.append(f"JOIN mart.{dim.table} {alias} ON {alias}.{dim.key} = {self.alias}.{dim.key}")
            self._joined.add(alias)
        return alias

    def join_tag(self, key: str) -> str:
        """The resource's value for tag `key` ('untagged' when it has none); one value per resource."""
        alias = f"t{len(self._joined)}"
        k = self.bind(key)
        self.joins.append(
            f"LEFT JOIN (SELECT b.resource_key, max(t.tag_value) AS tag_value FROM mart.bridge_resource_tag b "
            f"JOIN mart.dim_tag t USING (tag_id) WHERE t.tag_key = :{k} GROUP BY b.resource_key) {alias} "
            f"ON {alias}.resource_key = {self.alias}.resource_key"
        )
        self._joined.add(alias)
        return f"coalesce({alias}.tag_value, '{UNTAGGED}')"

    def sql(self, select: str, *, group_by: str = "", order_by: str = "", limit: int | None = None) -> sa.TextClause:
        text = f"SELECT {select} FROM mart.{self.table} {self.alias} {' '.join(self.joins)}"
        if self.where:
            text += " WHERE " + " AND ".join(self.where)
        if group_by:
            text += f" GROUP BY {group_by}"
        if order_by:
            text += f" ORDER BY {order_by}"
        if limit is not None:
            text += f" LIMIT {int(limit)}"
        return sa.text(text)


def _dimension_expr(q: _Query, name: str) -> str:
    if name.startswith(TAG_PREFIX):
        if q.table == "agg_cost_by_tag":
            return f"{q.alias}.tag_value"
        return q.join_tag(name[len(TAG_PREFIX) :])
    return f"{q.join_dimension(name)}.label"


def _apply_filters(q: _Query, filters: Filters | None) -> None:
    for name, values in (filters or {}).items():
        _check_dimension(name)
        if not values:
            continue
        if name.startswith(TAG_PREFIX) and q.table == "agg_cost_by_tag":
            continue  # the tag table's key is fixed by the WHERE on tag_key; values filter below
        expr = _dimension_expr(q, name)
        q.where.append(f"{expr} IN :{q.bind(tuple(values))}")


_MONTHLY_TABLES = ("agg_cost_monthly", "agg_cost_resource_monthly")


def _whole_months(engine: sa.Engine, start: dt.date, end: dt.date) -> bool:
    """Whether [start, end] holds only whole months of the data the mart has: each end is a month
    boundary or lies beyond the data (e.g. "this month" up to the last loaded day), so a monthly table
    gives the same sums as the daily rows."""
    starts_month = start.day == 1
    ends_month = (end + dt.timedelta(days=1)).day == 1
    if starts_month and ends_month:
        return True
    with engine.connect() as conn:
        first, last = conn.execute(sa.text("SELECT min(charge_date), max(charge_date) FROM mart.agg_cost_daily")).one()
    if first is None:
        return True  # an empty mart: every table answers with nothing
    return (starts_month or start <= first) and (ends_month or end >= last)


def _choose_table(group_by: str | None, filters: Filters | None, grain: str, whole_months: bool = False) -> str:
    names = [n for n, v in (filters or {}).items() if v]
    if group_by:
        names.append(group_by)
    tags = {n for n in names if n.startswith(TAG_PREFIX)}
    # gold's cost_by_tag answers "by tag key" views filtered by subscription/currency/that same key.
    if tags and group_by in tags and len(tags) == 1 and set(names) <= {group_by, "subscription", "currency"}:
        return "agg_cost_by_tag"
    # The monthly tables only when the range is whole months; partial months need daily rows.
    monthly = grain == "monthly" and whole_months
    if tags or any(not BY_NAME[n].in_aggregate for n in names if n not in tags):
        # Resource, meter and tag views need resource-grain rows: a month of them per resource x meter
        # (tens of thousands) rather than the fact's million.
        return "agg_cost_resource_monthly" if monthly else "fact_cost_daily"
    return "agg_cost_monthly" if monthly else "agg_cost_daily"


def _date_range(q: _Query, start: dt.date, end: dt.date) -> None:
    """Inclusive [start, end] on charge days (the monthly table is only chosen for whole months)."""
    if end < start:
        raise QueryError(f"end {end} is before start {start}")
    if q.table in _MONTHLY_TABLES:
        q.where.append(f"{q.alias}.charge_month BETWEEN :{q.bind(start.replace(day=1))} AND :{q.bind(end)}")
    else:
        q.where.append(f"{q.alias}.charge_date BETWEEN :{q.bind(start)} AND :{q.bind(end)}")


def _tag_table_filters(q: _Query, group_by: str, filters: Filters | None) -> None:
    q.where.append(f"{q.alias}.tag_key = :{q.bind(group_by[len(TAG_PREFIX) :])}")
    selected = (filters or {}).get(group_by)
    if selected:
        q.where.append(f"{q.alias}.tag_value IN :{q.bind(tuple(selected))}")


def _frame(conn: sa.Connection, statement: sa.TextClause, params: dict, columns: list[str]) -> pd.DataFrame:
    bound = statement.bindparams(*[sa.bindparam(k, expanding=True) for k, v in params.items() if isinstance(v, tuple)])
    rows = conn.execute(bound, params).all()
    return pd.DataFrame(rows, columns=columns)


def cost_breakdown(
    engine: sa.Engine,
    *,
    start: dt.date,
    end: dt.date,
    group_by: str | None = None,
    grain: Grain = "daily",
    metric: Metric = "actual",
    filters: Filters | None = None,
    top_n: int | None = None,
    converted_to: str | None = None,
) -> pd.DataFrame:
    """Cost per period (and per group). Columns: period (date: day, Monday of the week, or 1st of the
    month), group (str; "Total" without group_by), currency (str), cost (float, for charts), cost_exact
    (Decimal). With `top_n`, groups beyond the top N by total cost are summed into "Other".

    `converted_to` (the mart's reporting currency, see `fx_status`) sums the converted costs instead: one
    series in that currency whatever the billing currencies; a period holding a row without a rate is
    null (not available), never a sum that leaves it out. Without it, every currency is its own series."""
    column = _metric(metric) + ("_converted" if converted_to else "")
    if grain not in _PERIOD:
        raise QueryError(f"grain must be one of {sorted(_PERIOD)}, not {grain!r}")
    if group_by:
        _check_dimension(group_by)
    table = _choose_table(group_by, filters, grain, grain == "monthly" and _whole_months(engine, start, end))
    if converted_to and table == "agg_cost_by_tag":
        # gold's by-tag table has no converted costs: the resource-grain rows carry them.
        monthly = grain == "monthly" and _whole_months(engine, start, end)
        table = "agg_cost_resource_monthly" if monthly else "fact_cost_daily"
    if (
        top_n
        and not converted_to
        and group_by
        and table == "fact_cost_daily"
        and not group_by.startswith(TAG_PREFIX)
        and _choose_table(None, filters, "daily") == "agg_cost_daily"
        and _whole_months(engine, start, end)
    ):
        return _top_n_by_day(
            engine, start=start, end=end, group_by=group_by, grain=grain, column=column, filters=filters, top_n=top_n
        )
    q = _Query(table)
    _date_range(q, start, end)
    if table == "agg_cost_by_tag":
        _tag_table_filters(q, group_by, filters)
        _apply_filters(q, {k: v for k, v in (filters or {}).items() if k != group_by})
    else:
        _apply_filters(q, filters)
    date_col = f"{q.alias}.charge_month" if table in _MONTHLY_TABLES else f"{q.alias}.charge_date"
    period = _PERIOD[grain].format(col=date_col)
    if converted_to:
        # One currency: the billing currency is not a key any more.
        key = f"{q.alias}.{BY_NAME[group_by].key}" if group_by and not group_by.startswith(TAG_PREFIX) else "0"
        group = _dimension_expr(q, group_by) if group_by and group_by.startswith(TAG_PREFIX) else key
        inner = q.sql(f"{period} AS period, {group} AS gk, {_total(f'{q.alias}.{column}')} AS cost", group_by="1, 2")
        if group_by and not group_by.startswith(TAG_PREFIX):
            dim = BY_NAME[group_by]
            label, join = "d.label", f"JOIN mart.{dim.table} d ON d.{dim.key} = i.gk"
        else:
            label, join = ("i.gk" if group_by else "'Total'"), ""
        currency = f":{q.bind(converted_to)}"
        base = (
            f"SELECT i.period, {label} AS grp, CAST({currency} AS text) AS currency, {_total('i.cost')} AS cost "
            f"FROM ({inner.text}) i {join} GROUP BY 1, 2, 3"
        )
    elif group_by and group_by.startswith(TAG_PREFIX):
        group = _dimension_expr(q, group_by)
        currency = f"{q.join_dimension('currency')}.currency_code"
        base = q.sql(
            f"{period} AS period, {group} AS grp, {currency} AS currency, {_total(f'{q.alias}.{column}')} AS cost",
            group_by="1, 2, 3",
        ).text
    else:
        # Aggregate on integer keys first, then join the labels onto the (few) groups: grouping a million
        # fact rows by text labels is what made resource drill-downs slow.
        key = f"{q.alias}.{BY_NAME[group_by].key}" if group_by else "0"
        inner = q.sql(
            f"{period} AS period, {key} AS gk, {q.alias}.currency_key AS ck, {_total(f'{q.alias}.{column}')} AS cost",
            group_by="1, 2, 3",
        )
        if group_by:
            dim = BY_NAME[group_by]
            label, join = "d.label", f"JOIN mart.{dim.table} d ON d.{dim.key} = i.gk"
        else:
            label, join = "'Total'", ""
        base = (
            f"SELECT i.period, {label} AS grp, c.currency_code AS currency, {_total('i.cost')} AS cost "
            f"FROM ({inner.text}) i {join} JOIN mart.dim_currency c ON c.currency_key = i.ck GROUP BY 1, 2, 3"
        )
    if top_n and group_by:
        # Fold the tail into "Other" in SQL: a by-resource view must not ship 20k groups x days to pandas.
        statement = sa.text(
            f"WITH base AS ({base}), top AS (SELECT grp FROM base GROUP BY grp ORDER BY sum(cost) DESC, grp "
            f"LIMIT {int(top_n)}) SELECT period, CASE WHEN grp IN (SELECT grp FROM top) THEN grp ELSE 'Other' END, "
            f"currency, {_total('cost')} FROM base GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    else:
        statement = sa.text(f"SELECT * FROM ({base}) b ORDER BY 1, 2, 3")
    with engine.connect() as conn:
        frame = _frame(conn, statement, q.params, ["period", "group", "currency", "cost_exact"])
    frame["cost"] = frame["cost_exact"].astype(float)
    log.debug("cost_breakdown on %s: %d rows", table, len(frame))
    return frame[["period", "group", "currency", "cost", "cost_exact"]]


def _top_n_by_day(
    engine: sa.Engine,
    *,
    start: dt.date,
    end: dt.date,
    group_by: str,
    grain: str,
    column: str,
    filters: Filters | None,
    top_n: int,
) -> pd.DataFrame:
    """`cost_breakdown` with top_n at daily/weekly grain for a resource-grain dimension (resource, meter),
    filtered by aggregate dimensions only, over whole months of the data: the same rows as the fact-only
    query, read where they are cheap. The top N come from agg_cost_resource_monthly (same totals over
    whole months); only the top N's fact rows are summed per period; "Other" is the period's total from
    agg_cost_daily minus theirs, present where the period has fact rows outside the top N (fact_rows counts
    tell), exactly as when the tail is folded from the fact."""
    dim = BY_NAME[group_by]
    top_q = _Query("agg_cost_resource_monthly")
    fact_q = _Query("fact_cost_daily")
    total_q = _Query("agg_cost_daily", alias="a")
    fact_q.params = total_q.params = top_q.params  # one namespace for the bound values of all three
    for q in (top_q, fact_q, total_q):
        _date_range(q, start, end)
        _apply_filters(q, filters)
    top = top_q.sql(f"{top_q.alias}.{dim.key} AS gk, {_total(f'{top_q.alias}.{column}')} AS cost", group_by="1").text
    fact_label = f"{fact_q.join_dimension(group_by)}.label"
    fact_q.where.append(f"{fact_label} IN (SELECT grp FROM top)")
    fact_period = _PERIOD[grain].format(col="f.charge_date")
    top_rows = fact_q.sql(
        f"{fact_period} AS period, {fact_label} AS grp, f.currency_key AS ck, {_total(f'f.{column}')} AS cost, "
        "count(*) AS n",
        group_by="1, 2, 3",
    ).text
    total_period = _PERIOD[grain].format(col="a.charge_date")
    totals = total_q.sql(
        f"{total_period} AS period, a.currency_key AS ck, {_total(f'a.{column}')} AS cost, sum(a.fact_rows) AS n",
        group_by="1, 2",
    ).text
    statement = sa.text(
        f"WITH top AS (SELECT d.label AS grp FROM ({top}) t JOIN mart.{dim.table} d ON d.{dim.key} = t.gk "
        f"GROUP BY d.label ORDER BY sum(t.cost) DESC NULLS LAST, d.label LIMIT {int(top_n)}), "
        f"top_rows AS ({top_rows}), totals AS ({totals}), "
        "other AS (SELECT t.period, 'Other' AS grp, t.ck, t.cost - coalesce(sum(x.cost), 0) AS cost "
        "FROM totals t LEFT JOIN top_rows x ON x.period = t.period AND x.ck = t.ck "
        "GROUP BY t.period, t.ck, t.cost, t.n HAVING t.n > coalesce(sum(x.n), 0)) "
        f"SELECT u.period, u.grp, c.currency_code, {_total('u.cost')} FROM "
        "(SELECT period, grp, ck, cost FROM top_rows UNION ALL SELECT period, grp, ck, cost FROM other) u "
        "JOIN mart.dim_currency c ON c.currency_key = u.ck GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    with engine.connect() as conn:
        frame = _frame(conn, statement, top_q.params, ["period", "group", "currency", "cost_exact"])
    frame["cost"] = frame["cost_exact"].astype(float)
    log.debug("cost_breakdown top %d by %s per day: %d rows", top_n, group_by, len(frame))
    return frame[["period", "group", "currency", "cost", "cost_exact"]]


def time_series(
    engine: sa.Engine,
    *,
    start: dt.date,
    end: dt.date,
    grain: Grain = "daily",
    metric: Metric = "actual",
    filters: Filters | None = None,
) -> pd.DataFrame:
    """Total cost per period. Columns: period (date), currency (str), cost (float), cost_exact (Decimal)."""
    frame = cost_breakdown(engine, start=start, end=end, grain=grain, metric=metric, filters=filters)
    return frame.drop(columns="group")


def _sum(engine: sa.Engine, q: _Query, column: str) -> tuple[Decimal | None, list[str]]:
    """The total and the currencies it spans; None when the metric is not available for part of it."""
    currency = f"{q.join_dimension('currency')}.currency_code"
    statement = q.sql(f"{currency}, {_total(f'{q.alias}.{column}')}", group_by="1", order_by="1")
    with engine.connect() as conn:
        rows = _frame(conn, statement, q.params, ["currency", "total"])
    if any(v is None for v in rows["total"]):
        return None, rows["currency"].tolist()
    return sum(rows["total"], Decimal(0)), rows["currency"].tolist()


@dataclass(frozen=True)
class FxStatus:
    """What a converted view is: the reporting currency, the latest date of the rates it used, and the
    (billing currency, month) pairs that have cost but no rate (their converted cost is null)."""

    reporting_currency: str | None
    latest_rate_date: dt.date | None
    missing: list[tuple[str, str]]  # (currency, "YYYY-MM")

    @property
    def available(self) -> bool:
        return self.reporting_currency is not None


def reporting_currency(engine: sa.Engine) -> str | None:
    """The currency gold converts to (REPORTING_CURRENCY, once FX rates were imported), else None."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT currency FROM mart.fx_reporting_currency")).scalar()


def fx_status(
    engine: sa.Engine,
    *,
    start: dt.date,
    end: dt.date,
    metric: Metric = "actual",
    filters: Filters | None = None,
) -> FxStatus:
    """The reporting currency gold converted to (None: no conversion), the latest rate date among the rates
    to it for the range's months and the billing currencies of those months, and what lacks a rate."""
    column = _metric(metric)
    currency = reporting_currency(engine)
    if currency is None:
        return FxStatus(None, None, [])
    table = _choose_table(None, filters, "daily")
    q = _Query(table)
    _date_range(q, start, end)
    _apply_filters(q, filters)
    code = f"{q.join_dimension('currency')}.currency_code"
    month = f"date_trunc('month', {q.alias}.charge_date)::date"
    used = q.sql(
        f"{code} AS currency, {month} AS month, bool_or({q.alias}.{column} IS NOT NULL "
        f"AND {q.alias}.{column}_converted IS NULL) AS missing",
        group_by="1, 2",
    )
    statement = sa.text(
        f"WITH used AS ({used.text}) SELECT u.currency, to_char(u.month, 'YYYY-MM'), u.missing, "
        "(SELECT max(r.rate_date) FROM mart.fx_rates r WHERE r.rate_month = u.month "
        f"AND r.from_currency = u.currency AND r.to_currency = :{q.bind(currency)}) FROM used u ORDER BY 1, 2"
    )
    with engine.connect() as conn:
        frame = _frame(conn, statement, q.params, ["currency", "month", "missing", "rate_date"])
    missing = [(r.currency, r.month) for r in frame.itertuples() if r.missing]
    dates = [d for d in frame["rate_date"] if d is not None and not pd.isna(d)]
    return FxStatus(currency, max(dates) if dates else None, missing)


def data_as_of(engine: sa.Engine) -> dt.date | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()


def kpis(
    engine: sa.Engine,
    *,
    metric: Metric = "actual",
    as_of: dt.date | None = None,
    filters: Filters | None = None,
    converted_to: str | None = None,
) -> Kpis:
    """Month to date up to `as_of` (default: the last day with data) vs the same point last month.

    `converted_to` (the reporting currency) sums every billing currency's converted cost; a part without a
    rate makes the total not available (None), never a total that leaves it out."""
    column = _metric(metric) + ("_converted" if converted_to else "")
    latest = data_as_of(engine)
    day = as_of or latest
    if day is None:
        return Kpis(metric, None, Decimal(0), Decimal(0), Decimal(0), None, [])
    month_start = day.replace(day=1)
    prev_end = month_start - dt.timedelta(days=1)
    prev_start = prev_end.replace(day=1)
    prev_same = min(prev_end, prev_start.replace(day=min(day.day, prev_end.day)))
    table = _choose_table(None, filters, "daily")

    def total(start: dt.date, end: dt.date) -> tuple[Decimal, list[str]]:
        q = _Query(table)
        _date_range(q, start, end)
        _apply_filters(q, filters)
        return _sum(engine, q, column)

    mtd, cur1 = total(month_start, day)
    same, cur2 = total(prev_start, prev_same)
    last, cur3 = total(prev_start, prev_end)
    change = float((mtd - same) / same) if mtd is not None and same else None
    currencies = [converted_to] if converted_to else sorted(set(cur1) | set(cur2) | set(cur3))
    return Kpis(metric, latest, mtd, same, last, change, currencies)


def top_movers(
    engine: sa.Engine,
    *,
    dimension: str,
    current: tuple[dt.date, dt.date],
    previous: tuple[dt.date, dt.date],
    metric: Metric = "actual",
    filters: Filters | None = None,
    limit: int = 10,
    converted_to: str | None = None,
) -> pd.DataFrame:
    """Members whose cost changed most (absolute) between two inclusive date ranges. Columns: group (str),
    current_cost, previous_cost, change (float), change_pct (float ratio; NaN when previous is 0).
    `converted_to`: in the reporting currency, across billing currencies (see `kpis`)."""
    column = _metric(metric) + ("_converted" if converted_to else "")
    _check_dimension(dimension)
    table = _choose_table(dimension, filters, "daily")
    if converted_to and table == "agg_cost_by_tag":
        table = "fact_cost_daily"  # gold's by-tag table has no converted costs: the resource-grain rows do
    q = _Query(table)
    lo, hi = min(current[0], previous[0]), max(current[1], previous[1])
    _date_range(q, lo, hi)
    if table == "agg_cost_by_tag":
        _tag_table_filters(q, dimension, filters)
        _apply_filters(q, {k: v for k, v in (filters or {}).items() if k != dimension})
    else:
        _apply_filters(q, filters)
    plain = not dimension.startswith(TAG_PREFIX)
    # Plain dimensions: sum per integer key, then label the groups (see cost_breakdown).
    group = f"{q.alias}.{BY_NAME[dimension].key}" if plain else _dimension_expr(q, dimension)
    d = f"{q.alias}.charge_date"
    c0, c1 = q.bind(current[0]), q.bind(current[1])
    p0, p1 = q.bind(previous[0]), q.bind(previous[1])
    # A range with no rows costs 0; one whose rows lack the metric is not available (null).
    inner = q.sql(
        f"{group} AS grp, "
        f"coalesce({_total(f'{q.alias}.{column}', f'{d} BETWEEN :{c0} AND :{c1}')}, "
        f"CASE WHEN count(*) FILTER (WHERE {d} BETWEEN :{c0} AND :{c1}) = 0 THEN 0 END) AS cur, "
        f"coalesce({_total(f'{q.alias}.{column}', f'{d} BETWEEN :{p0} AND :{p1}')}, "
        f"CASE WHEN count(*) FILTER (WHERE {d} BETWEEN :{p0} AND :{p1}) = 0 THEN 0 END) AS prev",
        group_by="1",
    )
    if plain:
        dim = BY_NAME[dimension]
        labelled = (
            f"SELECT d.label AS grp, {_total('m.cur')} AS cur, {_total('m.prev')} AS prev FROM ({inner.text}) m "
            f"JOIN mart.{dim.table} d ON d.{dim.key} = m.grp GROUP BY 1"
        )
    else:
        labelled = inner.text
    statement = sa.text(
        f"SELECT grp, cur, prev FROM ({labelled}) l ORDER BY abs(cur - prev) DESC NULLS LAST, grp LIMIT {int(limit)}"
    )
    with engine.connect() as conn:
        frame = _frame(conn, statement, q.params, ["group", "current_cost", "previous_cost"])
    frame["current_cost"] = frame["current_cost"].astype(float)
    frame["previous_cost"] = frame["previous_cost"].astype(float)
    frame["change"] = frame["current_cost"] - frame["previous_cost"]
    frame["change_pct"] = frame["change"] / frame["previous_cost"].where(frame["previous_cost"] != 0)
    return frame


def dimensions() -> list[str]:
    """Dimension names the explorer can group and filter by (plus "tag:<key>" for each of `tag_keys`)."""
    return [d.name for d in DIMENSIONS]


def tag_keys(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT DISTINCT tag_key FROM mart.dim_tag ORDER BY 1")).scalars())


def dimension_values(engine: sa.Engine, dimension: str, *, search: str | None = None, limit: int = 500) -> list[str]:
    """Labels of a dimension's members for a multi-select, sorted; `search` is a case-insensitive substring."""
    _check_dimension(dimension)
    params: dict[str, object] = {"limit": int(limit)}
    if dimension.startswith(TAG_PREFIX):
        params["key"] = dimension[len(TAG_PREFIX) :]
        sql = (
            f"SELECT v FROM (SELECT tag_value AS v FROM mart.dim_tag WHERE tag_key = :key UNION SELECT '{UNTAGGED}') x"
        )
        column = "v"
    else:
        dim = BY_NAME[dimension]
        sql = f"SELECT DISTINCT label FROM mart.{dim.table}"
        column = "label"
    if search:
        sql = f"SELECT * FROM ({sql}) s WHERE {column} ILIKE :pattern"
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["pattern"] = f"%{escaped}%"
    sql = f"SELECT {column} FROM ({sql}) o ORDER BY 1 LIMIT :limit"
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).scalars())


def freshness(engine: sa.Engine) -> Freshness:
    """ "Data as of" and the state of the last load, for the overview and pipeline pages."""
    with engine.connect() as conn:
        last = conn.execute(
            sa.text("SELECT started_at, status FROM mart.load_history ORDER BY load_id DESC LIMIT 1")
        ).first()
        ok = conn.execute(sa.text("SELECT max(finished_at) FROM mart.load_history WHERE status = 'succeeded'")).scalar()
        months = conn.execute(
            sa.text(
                "SELECT to_char(date_trunc('month', min(charge_date)), 'YYYY-MM') FROM mart.agg_cost_daily "
                "GROUP BY date_trunc('month', charge_date) ORDER BY 1"
            )
        ).scalars()
        months = list(months)
    return Freshness(
        data_as_of=data_as_of(engine),
        last_load_at=last[0] if last else None,
        last_load_status=last[1] if last else None,
        last_successful_load_at=ok,
        fact_months=months,
    )
