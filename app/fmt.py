"""Number and date formatting shared by the pages."""

from __future__ import annotations

import datetime as dt

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF ", "INR": "₹"}


def money(value: float | None, currency: str = "", *, decimals: int | None = None) -> str:
    """1234567.8 -> "€1.23M"; small values keep cents. None -> "–"."""
    if value is None:
        return "–"
    symbol = SYMBOLS.get(currency, f"{currency} " if currency else "")
    sign = "-" if value < 0 else ""
    v = abs(value)
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
