"""Period and day expressions ("last_month", "2025-03", "last tuesday") resolved against the mart's latest day."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
}


class PeriodError(ValueError):
    """A period or day the tools cannot read; the message lists the accepted forms."""


PERIOD_HELP = (
    "accepted periods: last_7_days, last_30_days, last_N_days, yesterday, this_week, last_week, this_month, "
    "last_month, this_quarter, last_quarter, this_year, last_year, all, YYYY, YYYY-MM, YYYY-MM-DD, "
    "YYYY-MM-DD..YYYY-MM-DD (inclusive); relative periods count back from the latest day in the mart"
)


@dataclass(frozen=True)
class Period:
    start: dt.date  # inclusive
    end: dt.date  # exclusive
    label: str

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> Period:
        """The period of equal length just before (whole months map to the previous month)."""
        if self.start.day == 1 and self.end.day == 1 and _month_count(self.start, self.end) == 1:
            start = _add_months(self.start, -1)
            return Period(start, self.start, start.strftime("%Y-%m"))
        start = self.start - dt.timedelta(days=self.days)
        return Period(start, self.start, f"{start}..{self.start - dt.timedelta(days=1)}")


def _month_count(start: dt.date, end: dt.date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _month(year: int, month: int) -> Period:
    start = dt.date(year, month, 1)
    return Period(start, _add_months(start, 1), start.strftime("%Y-%m"))


def resolve_period(text: str | None, as_of: dt.date) -> Period:
    """A canonical period token (see PERIOD_HELP) -> dates. `as_of` is the last day with data."""
    token = (text or "last_30_days").strip().lower().replace(" ", "_").replace("-to-", "..")
    after = as_of + dt.timedelta(days=1)
    if token in ("all", "all_time", "everything"):
        return Period(dt.date(2000, 1, 1), after, "all time")
    if match := re.fullmatch(r"(?:last|past|previous)_(\d+)_days?", token):
        days = int(match.group(1))
        if days < 1:
            raise PeriodError(PERIOD_HELP)
        return Period(after - dt.timedelta(days=days), after, f"last {days} days to {as_of}")
    if token in ("today", "latest_day", "latest"):
        return Period(as_of, after, str(as_of))
    if token == "yesterday":
        day = as_of - dt.timedelta(days=1)
        return Period(day, as_of, str(day))
    if token in ("this_week", "week_to_date", "wtd"):
        start = as_of - dt.timedelta(days=as_of.weekday())
        return Period(start, after, f"week of {start} to {as_of}")
    if token in ("last_week", "previous_week"):
        start = as_of - dt.timedelta(days=as_of.weekday() + 7)
        return Period(start, start + dt.timedelta(days=7), f"week of {start}")
    if token in ("this_month", "month_to_date", "mtd", "current_month"):
        start = as_of.replace(day=1)
        return Period(start, after, f"{start:%Y-%m} to {as_of}")
    if token in ("last_month", "previous_month"):
        prev = _add_months(as_of.replace(day=1), -1)
        return _month(prev.year, prev.month)
    if token in ("this_quarter", "quarter_to_date", "qtd", "last_quarter", "previous_quarter"):
        start = dt.date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
        if token in ("last_quarter", "previous_quarter"):
            prev = _add_months(start, -3)
            return Period(prev, start, f"{prev.year}-Q{(prev.month - 1) // 3 + 1}")
        return Period(start, after, f"{start.year}-Q{(start.month - 1) // 3 + 1} to {as_of}")
    if token in ("this_year", "year_to_date", "ytd"):
        start = dt.date(as_of.year, 1, 1)
        return Period(start, after, f"{as_of.year} to {as_of}")
    if token in ("last_year", "previous_year"):
        return Period(dt.date(as_of.year - 1, 1, 1), dt.date(as_of.year, 1, 1), str(as_of.year - 1))
    if match := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})\.\.(\d{4})-(\d{2})-(\d{2})", token):
        start = dt.date(*map(int, match.groups()[:3]))
        last = dt.date(*map(int, match.groups()[3:]))
        if last < start:
            raise PeriodError("the end of the range is before its start")
        return Period(start, last + dt.timedelta(days=1), f"{start}..{last}")
    if match := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", token):
        day = dt.date(*map(int, match.groups()))
        return Period(day, day + dt.timedelta(days=1), str(day))
    if match := re.fullmatch(r"(\d{4})-(\d{1,2})", token):
        year, month = map(int, match.groups())
        if not 1 <= month <= 12:
            raise PeriodError(PERIOD_HELP)
        return _month(year, month)
    if match := re.fullmatch(r"(\d{4})", token):
        year = int(match.group(1))
        return Period(dt.date(year, 1, 1), dt.date(year + 1, 1, 1), str(year))
    if match := re.fullmatch(r"(\d{4})-q([1-4])", token):
        year, quarter = int(match.group(1)), int(match.group(2))
        start = dt.date(year, 3 * quarter - 2, 1)
        return Period(start, _add_months(start, 3), f"{year}-Q{quarter}")
    raise PeriodError(f"unknown period {text!r}; {PERIOD_HELP}")


def resolve_day(text: str | None, as_of: dt.date) -> dt.date:
    """A single day: YYYY-MM-DD, today/latest, yesterday, or a weekday name (the most recent one before as_of)."""
    token = (text or "latest").strip().lower().replace("last ", "").replace("last_", "")
    if token in ("latest", "today", ""):
        return as_of
    if token == "yesterday":
        return as_of - dt.timedelta(days=1)
    if token in WEEKDAYS:
        back = (as_of.weekday() - WEEKDAYS[token]) % 7 or 7
        return as_of - dt.timedelta(days=back)
    try:
        return dt.date.fromisoformat(token)
    except ValueError as exc:
        raise PeriodError(f"unknown day {text!r}; use YYYY-MM-DD, latest, yesterday or a weekday name") from exc


# --- natural language -> canonical tokens (used by the rule-based model) -------------------
_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))


def _year_for(month: int, as_of: dt.date) -> int:
    # "in March" means the most recent March that is not after the data.
    return as_of.year if month <= as_of.month else as_of.year - 1


def find_periods(question: str, as_of: dt.date) -> list[str]:
    """Canonical period tokens mentioned in a question, in order of appearance."""
    q = question.lower()
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []

    def add(match: re.Match[str], token: str) -> None:
        span = match.span()
        if any(s < span[1] and span[0] < e for s, e in taken):
            return
        taken.append(span)
        found.append((span[0], token))

    for m in re.finditer(r"(\d{4}-\d{2}-\d{2})\s*(?:\.\.|to|until|through|-)\s*(\d{4}-\d{2}-\d{2})", q):
        add(m, f"{m.group(1)}..{m.group(2)}")
    for m in re.finditer(r"\b(\d{4}-\d{2}-\d{2})\b", q):
        add(m, m.group(1))
    for m in re.finditer(r"\b(\d{4}-\d{2})\b", q):
        add(m, m.group(1))
    for m in re.finditer(rf"\b({_MONTH_RE})\b\.?(?:\s+(\d{{4}}))?", q):
        month = MONTHS[m.group(1)]
        if m.group(1) == "may" and not m.group(2) and not re.search(r"\b(in|of|for|during|vs|and)\s+may\b", q):
            continue  # the verb "may"
        year = int(m.group(2)) if m.group(2) else _year_for(month, as_of)
        add(m, f"{year}-{month:02d}")
    for m in re.finditer(r"\b(?:last|past|previous)\s+(\d+|[a-z]+)\s+days?\b", q):
        n = int(m.group(1)) if m.group(1).isdigit() else NUMBER_WORDS.get(m.group(1))
        if n:
            add(m, f"last_{n}_days")
    phrases = [
        (r"\b(?:this|current)\s+month\b|\bmonth[- ]to[- ]date\b|\bmtd\b", "this_month"),
        (r"\b(?:last|previous|prior)\s+month\b|\bthe\s+month\s+before\b", "last_month"),
        (r"\b(?:this|current)\s+week\b|\bweek[- ]to[- ]date\b|\bwtd\b", "this_week"),
        (r"\b(?:last|previous|prior)\s+week\b|\bthe\s+week\s+before\b", "last_week"),
        (r"\b(?:this|current)\s+quarter\b|\bquarter[- ]to[- ]date\b|\bqtd\b", "this_quarter"),
        (r"\b(?:last|previous|prior)\s+quarter\b", "last_quarter"),
        (r"\b(?:this|current)\s+year\b|\byear[- ]to[- ]date\b|\bytd\b", "this_year"),
        (r"\b(?:last|previous|prior)\s+year\b", "last_year"),
        (r"\byesterday\b", "yesterday"),
        (
            r"\ball[- ]time\b|\bsince (?:the )?(?:beginning|start)\b|\bsince inception\b|\bever\b|"
            r"\blife[- ]?time\b|\bto date\b",
            "all",
        ),
    ]
    for pattern, token in phrases:
        for m in re.finditer(pattern, q):
            add(m, token)
    return [token for _, token in sorted(found)]


def find_day(question: str, as_of: dt.date) -> str | None:
    """A single day the question points at (ISO date, 'yesterday', 'last tuesday', 'April 22')."""
    q = question.lower()
    if m := re.search(r"\b(\d{4}-\d{2}-\d{2})\b", q):
        return m.group(1)
    if m := re.search(r"\b(?:last|on|this past)?\s*(" + "|".join(WEEKDAYS) + r")\b", q):
        return str(resolve_day(m.group(1), as_of))
    if m := re.search(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b", q):
        month = MONTHS[m.group(1)]
        return str(dt.date(_year_for(month, as_of), month, int(m.group(2))))
    if m := re.search(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_RE})\b", q):
        month = MONTHS[m.group(2)]
        return str(dt.date(_year_for(month, as_of), month, int(m.group(1))))
    if re.search(r"\byesterday\b", q):
        return str(as_of - dt.timedelta(days=1))
    return None
