"""Number and date formatting shared by the pages."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF ", "INR": "₹"}


def cost(value, currency: str = "", metric: str = "actual") -> str:
    """An exact total (Decimal) for display; None is a metric no report covers: "<metric> not available", never 0."""
    return f"{metric} cost not available" if value is None else money(float(value), currency)


def not_available_hint(metric: str) -> str:
    other = "AmortizedCost" if metric == "amortized" else "ActualCost"
    return (
        f"{metric.capitalize()} cost is not available for (part of) this period: only the other metric's "
        f"export was loaded. Import the matching {other} export (or a FOCUS file) for the same scope and days."
    )


def money(value: float | Decimal | None, currency: str = "", *, decimals: int | None = None) -> str:
    """1234567.8 -> "€1.23M"; small values keep cents. None -> "–". Decimals (the mart's money) display as floats."""
    if value is None:
        return "–"
    symbol = SYMBOLS.get(currency, f"{currency} " if currency else "")
    sign = "-" if value < 0 else ""
    v = abs(float(value))
    if decimals is None:
        # From 10k up in thousands (12.35k); below that cents stay readable.
        for limit, unit, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
            if v >= limit:
                return f"{sign}{symbol}{v / unit:,.2f}{suffix}"
        return f"{sign}{symbol}{v:,.2f}"
    return f"{sign}{symbol}{v:,.{decimals}f}"


def pct(value: float | None, *, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}%" if signed else f"{value:.1f}%"


def when(value: dt.datetime | dt.date | None) -> str:
    if value is None:
        return "never"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def ago(value: dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or dt.datetime.now(dt.UTC)) - value).total_seconds()
    for limit, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= limit:
            return f"{seconds / limit:.0f} {unit} ago"
    return "just now"


def missing(value: object) -> bool:
    """None, NaN, NaT or pd.NA: what a DataFrame cell holds where a value does not apply."""
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def count(value: object) -> str:
    """4916276 -> "4,916,276"; missing -> "–"; a value that is not a number is shown as it is."""
    if missing(value):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # exact: a float would round counts beyond 2**53
    try:
        return f"{round(float(value)):,}"  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return str(value)


def compact_count(value: object) -> str:
    """4916276 -> "4.9M", 12345 -> "12.3k"; below 10,000 the exact count; missing -> "–"."""
    if missing(value):
        return "–"
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    for limit, unit, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= limit:
            return f"{v / unit:,.1f}{suffix}"
    return count(v)


def seconds(value: object) -> str:
    """12.345 -> "12.3"; missing (a step that never started) -> "–"."""
    if missing(value):
        return "–"
    try:
        return f"{float(value):,.1f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def short_time(value: object, *, tz: dt.tzinfo | None = None) -> str:
    """A timestamp in UTC (or `tz`) as "21 Nov 16:28:36"; missing -> "–".

    UTC like every other time in the app (schedules, "data as of", run requests), so an operator never
    converts between two zones on one page; the date stays because a run's steps can cross midnight."""
    if missing(value) or not isinstance(value, dt.datetime):
        return "–" if missing(value) else str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)  # the ops tables store UTC
    return value.astimezone(tz or dt.UTC).strftime("%d %b %H:%M:%S")
