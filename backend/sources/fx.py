"""FX rates files (date, from, to, rate): checked, reduced to one rate per month and currency pair, written to silver/fx_rates.

A rates file is reference data, not cost data, so it does not travel through Kafka and bronze:

- it is tiny (a few rows per month) and replaces what it names; there is no stream of it to buffer,
  no per-day cursor to advance and no re-fetch that bronze must make survivable;
- every rate of a file must land together or not at all (a half-applied file would convert some
  months with new rates and others with old ones), which one Delta commit gives directly, while a
  topic would split it into messages consumed and merged independently;
- gold needs the rates of the same run it converts with: written under the pipeline run (which holds
  the pipeline lock), they are there for that run's gold step, with nothing in flight.

So the ingest step calls `import_rates`, which writes silver/fx_rates through delta-rs (the Lake),
replacing exactly the months whose rates the file changes (the table is partitioned by rate_month).
Gold keeps a progress mark on this table and recomputes the months whose partitions changed.

The file: a CSV (optionally gzip) with a header naming a date, a from currency, a to currency and a
rate (common spellings: from_currency / base, to_currency / quote / target, exchange_rate). `rate`
converts one unit of `from` into `to`. A date is YYYY-MM-DD, or YYYY-MM for a month's rate (dated the
month's last day). Per (month, from, to) the rate of the latest date in that month is kept, with that
date. Any bad row (date, currency code, rate) refuses the whole file, naming the rows; nothing loads.
"""

from __future__ import annotations

import calendar
import csv
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa

from backend.config import Settings
from backend.lake import Lake
from backend.lake.catalog import SILVER_FX_RATES
from backend.sources.files import BOM, GZIP_MAGIC, PARQUET_MAGIC, FileRefusedError, _read_limited

log = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 10
# Gold multiplies costs by DECIMAL(20,12) rates: 8 integer digits (e.g. 1 USD = 42,000 IRR) and 12 decimals.
MAX_RATE = Decimal(10**8)
RATE_DECIMALS = Decimal(1).scaleb(-12)

# Header spellings (compared lower-case, spaces and hyphens as underscores), first match wins.
DATE_COLUMNS = ("date", "rate_date", "month", "period", "effective_date", "as_of", "as_of_date")
FROM_COLUMNS = ("from", "from_currency", "base", "base_currency", "source_currency", "currency_from")
TO_COLUMNS = ("to", "to_currency", "quote", "quote_currency", "target", "target_currency", "currency_to")
RATE_COLUMNS = ("rate", "exchange_rate", "fx_rate", "conversion_rate")

# ISO 4217 active codes (2024), plus the fund codes banks quote: a typo ("EUO") is refused, not loaded.
_ISO_4217_CODES = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS
    GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT
    LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD
    OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC
    SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG
    XOF XPF YER ZAR ZMW ZWG ZWL"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class RatesRefusedError(FileRefusedError):
    """A rates file that cannot be imported; the message names the rows and what is wrong. Nothing loaded."""


@dataclass(frozen=True)
class Rate:
    """One kept rate: one unit of from_currency in to_currency for rate_month, from the file's row on rate_date."""

    rate_month: str
    from_currency: str
    to_currency: str
    rate: Decimal
    rate_date: date

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rate_month, self.from_currency, self.to_currency)


@dataclass
class RatesFile:
    """A checked rates file: the rates it keeps (latest date per month and pair) and what it held."""

    path: Path
    rows: int
    rates: list[Rate]

    @property
    def months(self) -> list[str]:
        return sorted({r.rate_month for r in self.rates})


@dataclass
class RatesImport:
    """What importing a rates file changed in silver/fx_rates."""

    file: str
    rows: int
    rates: int
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    changed_months: list[str] = field(default_factory=list)

    def report(self) -> dict:
        return {
            "file": self.file,
            "format": "FX rates",
            "rows": self.rows,
            "rates_kept": self.rates,
            "added": self.added,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "changed_months": list(self.changed_months),
        }

    @property
    def detail(self) -> str:
        months = ", ".join(self.changed_months) or "none"
        return (
            f"FX rates: {self.rows} rows, {self.rates} month rates ({self.added} new, {self.replaced} replaced, "
            f"{self.unchanged} unchanged); months to convert again: {months}"
        )


def _normal(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lstrip("\ufeff").lower())


def _columns(header: list[str]) -> dict[str, int] | None:
    """Positions of the date, from, to and rate columns, or None when the header is not a rates file's."""
    names = [_normal(h) for h in header]
    found: dict[str, int] = {}
    for role, candidates in (
        ("date", DATE_COLUMNS),
        ("from", FROM_COLUMNS),
        ("to", TO_COLUMNS),
        ("rate", RATE_COLUMNS),
    ):
        index = next((names.index(c) for c in candidates if c in names), None)
        if index is None:
            return None
        found[role] = index
    return found


def _first_line(path: Path, limit: int = 64 * 1024) -> bytes:
    import gzip

    with path.open("rb") as fh:
        head = fh.read(limit)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(limit)
        except (OSError, EOFError):
            return b""
    return head.split(b"\n", 1)[0]


def is_rates_file(path: Path) -> bool:
    """Whether `path` is a CSV (or gzip CSV) whose header names a date, a from and a to currency and a rate.

    Cost exports never carry from / to currency columns, so the header alone tells them apart."""
    path = Path(path)
    if not path.is_file():
        return False
    line = _first_line(path)
    if not line or line.startswith(PARQUET_MAGIC):
        return False
    if line.startswith(BOM):
        line = line[len(BOM) :]
    try:
        header = next(csv.reader([line.decode("utf-8").rstrip("\r")]), [])
    except UnicodeDecodeError:
        return False
    return _columns(header) is not None


def _parse_date(text: str) -> date | None:
    value = text.strip()
    try:
        if _MONTH.match(value):
            year, month = int(value[:4]), int(value[5:])
            return date(year, month, calendar.monthrange(year, month)[1])  # a month's rate: its last day
        if len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        return None
    return None


def _parse_currency(text: str, role: str) -> tuple[str | None, str | None]:
    code = text.strip().upper()
    if not code:
        return None, f"the {role} currency is empty"
    if code not in ISO_4217:
        return None, f"{role} currency {text.strip()!r} is not an ISO 4217 currency code"
    return code, None


def _parse_rate(text: str) -> tuple[Decimal | None, str | None]:
    bad = f"rate {text.strip()!r} is not a positive number"
    # Plain decimals only: Decimal() would also take "1_000", "NaN" or "Infinity", which a rates file must not hold.
    if not _NUMBER.match(text.strip()):
        return None, bad
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        return None, bad
    if not rate.is_finite() or rate <= 0:
        return None, bad
    if rate >= MAX_RATE:
        return None, f"rate {text.strip()!r} is too large (at most {MAX_RATE - RATE_DECIMALS} per unit)"
    kept = rate.quantize(RATE_DECIMALS)
    if kept == 0:
        return None, f"rate {text.strip()!r} is smaller than 12 decimals can hold"
    return kept, None


def parse_rates(path: Path, settings: Settings) -> RatesFile:
    """Check a rates file and keep, per (month, from, to), the rate of the latest date; RatesRefusedError if bad."""
    path = Path(path)
    try:
        data = _read_limited(path, settings)
    except FileRefusedError as exc:
        raise RatesRefusedError(str(exc)) from None
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RatesRefusedError(f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    columns = _columns(header)
    if columns is None:
        raise RatesRefusedError(
            f"{path.name} is not an FX rates file: its header needs date, from, to and rate columns (got {header})"
        )
    width = max(columns.values()) + 1
    errors: list[str] = []
    seen: dict[tuple[date, str, str], tuple[int, Decimal]] = {}
    rows = 0
    # The header is row 1, so a row number is the line a spreadsheet shows (quoted newlines aside).
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        rows += 1
        if len(row) < width:
            errors.append(f"row {number}: {len(row)} fields, expected at least {width}")
            continue
        problems = []
        day = _parse_date(row[columns["date"]])
        if day is None:
            problems.append(f"date {row[columns['date']].strip()!r} is not YYYY-MM-DD or YYYY-MM")
        source, problem = _parse_currency(row[columns["from"]], "from")
        problems += [problem] if problem else []
        target, problem = _parse_currency(row[columns["to"]], "to")
        problems += [problem] if problem else []
        rate, problem = _parse_rate(row[columns["rate"]])
        problems += [problem] if problem else []
        if not problems and source == target and rate != 1:
            problems.append(f"{source} to {source} must be 1, not {row[columns['rate']].strip()}")
        if problems:
            errors.append(f"row {number}: " + "; ".join(problems))
            continue
        key = (day, source, target)
        if key in seen and seen[key][1] != rate:
            errors.append(
                f"row {number}: {source} to {target} on {day} is {rate.normalize()}, but row {seen[key][0]} "
                f"says {seen[key][1].normalize()}"
            )
            continue
        seen.setdefault(key, (number, rate))
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        raise RatesRefusedError(f"{path.name}: {len(errors)} bad row(s), nothing imported: " + " | ".join(shown) + more)
    if not seen:
        raise RatesRefusedError(f"{path.name} has a rates header but no rates; nothing imported")
    latest: dict[tuple[str, str, str], Rate] = {}
    for (day, source, target), (_number, rate) in seen.items():
        if source == target:
            continue  # a currency converts to itself at 1 without a stored rate
        candidate = Rate(day.strftime("%Y-%m"), source, target, rate, day)
        kept = latest.get(candidate.key)
        if kept is None or kept.rate_date < day:
            latest[candidate.key] = candidate
    return RatesFile(path=path, rows=rows, rates=sorted(latest.values(), key=lambda r: r.key))


def _table(rates: Iterable[Rate]) -> pa.Table:
    rates = list(rates)
    return pa.table(
        {
            "rate_month": pa.array([r.rate_month for r in rates], pa.string()),
            "from_currency": pa.array([r.from_currency for r in rates], pa.string()),
            "to_currency": pa.array([r.to_currency for r in rates], pa.string()),
            "rate": pa.array([r.rate for r in rates], SILVER_FX_RATES.schema.field("rate").type),
            "rate_date": pa.array([r.rate_date for r in rates], pa.date32()),
        },
        schema=SILVER_FX_RATES.schema,
    )


def stored_rates(lake: Lake) -> list[Rate]:
    """Every rate silver/fx_rates holds (small: a few per month), oldest month first."""
    if not lake.exists(SILVER_FX_RATES.name):
        return []
    rows = lake.read_arrow(SILVER_FX_RATES.name, columns=SILVER_FX_RATES.schema.names).to_pylist()
    return sorted(
        (Rate(r["rate_month"], r["from_currency"], r["to_currency"], Decimal(r["rate"]), r["rate_date"]) for r in rows),
        key=lambda r: r.key,
    )


def write_rates(lake: Lake, rates: RatesFile, *, run_id: str) -> RatesImport:
    """Replace the (month, from, to) rates the file names, keep every other rate; one commit, changed months only."""
    from backend.lake.engine import ensure_table

    ensure_table(lake, SILVER_FX_RATES.name, SILVER_FX_RATES.schema, SILVER_FX_RATES.partition_by)
    old = {r.key: r for r in stored_rates(lake)}
    result = RatesImport(file=rates.path.name, rows=rates.rows, rates=len(rates.rates))
    merged = dict(old)
    changed: set[str] = set()
    for rate in rates.rates:
        before = old.get(rate.key)
        if before == rate:
            result.unchanged += 1
            continue
        result.added += before is None
        result.replaced += before is not None
        merged[rate.key] = rate
        changed.add(rate.rate_month)
    result.changed_months = sorted(changed)
    if not changed:
        log.info("fx rates %s: every rate is already stored; nothing written", rates.path.name)
        return result
    months = ", ".join(f"'{m}'" for m in result.changed_months)  # validated YYYY-MM: safe in the predicate
    lake.replace_where(
        SILVER_FX_RATES.name,
        _table(r for r in merged.values() if r.rate_month in changed),
        predicate=f"rate_month IN ({months})",
        run_id=run_id,
        partition_by=SILVER_FX_RATES.partition_by,
    )
    log.info("fx rates %s: %s", rates.path.name, result.detail)
    return result


def import_rates(lake: Lake, settings: Settings, path: Path, *, run_id: str) -> RatesImport:
    """Check a rates file and write it; RatesRefusedError (with the rows) before anything is written."""
    return write_rates(lake, parse_rates(path, settings), run_id=run_id)


def resolve_reporting_currency(setting: str, targets: Iterable[str]) -> str | None:
    """The currency costs convert to: the setting; when empty, the rates' target if they all share one; else None."""
    if setting:
        return setting.strip().upper()
    distinct = sorted({t for t in targets if t})
    if len(distinct) > 1:
        log.warning(
            "fx rates convert to %s and REPORTING_CURRENCY is empty: nothing is converted; set it to one of them",
            ", ".join(distinct),
        )
    return distinct[0] if len(distinct) == 1 else None


def reporting_currency(settings: Settings, lake: Lake) -> str | None:
    """The reporting currency this lake converts to now (settings and the stored rates)."""
    return resolve_reporting_currency(settings.reporting_currency, (r.to_currency for r in stored_rates(lake)))
