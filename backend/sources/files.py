"""File import: FOCUS CSV/Parquet and Azure EA/MCA cost exports -> byte-exact chunks per (scope, day), with exact totals.

What a file goes through (all before a single chunk is handed out, so a refused file touches nothing):

1. size cap (settings.max_upload_mb; a gzip file's content may be at most 10x that);
2. gzip is undone, a UTF-8 BOM is removed from the header only;
3. the header decides the format (formats.py); anything else is refused with the formats expected;
4. records are found quote-aware (quoted fields may hold commas and newlines) and parsed for three
   things only: the charge day (ISO or MM/DD/YYYY), the scope (subscription, else billing account)
   and the billed amount, summed as exact Decimals per (scope, day) and for the whole file — the
   "total the source reported" that reconciliation compares silver against;
5. chunks hold the header line plus the rows of one (scope, day), byte for byte as in the file (a
   last row without a newline gets the header's line ending so rows never run together), cut to
   fit one Kafka message; key "<scope>|<YYYY-MM-DD>", or "<scope>" when the day does not parse.

Rows whose amount is not a number stay in the chunks (silver quarantines them with a reason) and
are counted in `PreparedFile.invalid_amounts`; they are left out of the totals.

A file is known by the sha256 of its content: one whose content bronze already holds (a committed
import, recorded by the cursor store) or that appears twice in one import is skipped with a message
naming the earlier import, so re-dropping an export never doubles it. Another file with the same
name but other content is imported normally.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.config import Settings
from backend.sources import delivery, manifest
from backend.sources.base import ContentType, RawChunk
from backend.sources.chunks import parquet_pieces, payload_budget
from backend.sources.csvsplit import record_ends
from backend.sources.cursors import CursorRow, CursorStore, ImportedFile
from backend.sources.formats import FOCUS, Detection, UnrecognisedFileError, detect, focus_version

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
BOM = b"\xef\xbb\xbf"
NULLS = frozenset({"", "null", "none", "nan", "n/a"})
MAX_GZIP_RATIO = 10
SOURCE = "file"


class FileRefusedError(ValueError):
    """A file that cannot be imported; the message says why and what to do. Nothing of it was loaded."""


@dataclass
class GroupTotal:
    """Rows and exact amounts of one (scope, day, billing currency) as the file reports them.

    Per currency: a billing account can bill one scope's day in two currencies, and a reported total
    that summed them would never match silver's per-currency totals (reconciliation compares per currency)."""

    scope: str
    day: date | None
    rows: int = 0
    cost: Decimal = Decimal(0)
    extra: Decimal = Decimal(0)
    currency: str | None = None


@dataclass
class PreparedFile:
    """A checked file, ready to hand out: its chunks and what it says it contains."""

    path: Path
    sha256: str
    detection: Detection
    metric: str
    chunks: list[RawChunk]
    totals: dict[tuple[str, date | None, str], GroupTotal]  # keyed (scope, day, currency)
    row_count: int
    total_cost: Decimal
    cost_column: str
    invalid_amounts: int = 0
    blank_lines: int = 0
    unparsed_days: int = 0
    notes: list[str] = field(default_factory=list)
    # Sampled row fingerprints per slice (backend/sources/delivery.py) and what was decided with them.
    modulus: int = 1
    fingerprints: dict[str, list[int]] = field(default_factory=dict)
    decision: delivery.Decision | None = None
    delivery_id: str = ""  # a manifest's run id; else set from the file's sha256

    @property
    def dataset(self) -> str:
        """What a re-delivery of this file would also be: the same payload format and metric."""
        return f"{self.detection.format.payload_format.value}:{self.metric}"

    @property
    def adds(self) -> bool:
        return self.decision is not None and self.decision.mode == delivery.ADD

    def report(self) -> dict:
        """The load report of this file: format, version, metric, rows, totals per currency and month, delivery."""
        totals: dict[str, dict[str, str]] = {}
        for (_scope, day, _cur), group in sorted(self.totals.items(), key=lambda kv: (kv[0][1] or date.min, kv[0][0])):
            month = day.strftime("%Y-%m") if day else "(no date)"
            per_currency = totals.setdefault(group.currency or "(none)", {})
            per_currency[month] = str(Decimal(per_currency.get(month, "0")) + group.cost)
        fmt = self.detection.format
        columns = self.detection.columns.values()
        return {
            "file": self.path.name,
            "format": fmt.name if fmt is not FOCUS else f"FOCUS {focus_version(columns)}",
            "metric": self.metric,
            "rows_read": self.row_count + self.blank_lines,
            "rows": self.row_count,
            "blank_lines": self.blank_lines,
            "amounts_not_numbers": self.invalid_amounts,
            "days_unreadable": self.unparsed_days,
            "totals": totals,
            "cost_column": self.cost_column,
            "delivery": self.decision.detail if self.decision else "",
            "notes": list(self.notes),
        }


def parse_day(value: str) -> date | None:
    """A charge day from ISO (2025-01-31, 2025-01-31T00:00:00Z) or US (01/31/2025) text; None if neither."""
    text = value.strip()
    if text.lower() in NULLS:
        return None
    try:
        if len(text) >= 10 and text[4] == "-":
            return date.fromisoformat(text[:10])
        if "/" in text:
            month, day, year = text.split(" ", 1)[0].split("/")
            return date(int(year), int(month), int(day))
    except ValueError:
        return None
    return None


def parse_amount(value: str) -> Decimal | None:
    """An exact amount (Azure writes plain decimals and sometimes 1E-05); None for NULL/empty; raises if garbage."""
    text = value.strip()
    if text.lower() in NULLS:
        return None
    amount = Decimal(text)  # InvalidOperation for garbage
    if not amount.is_finite():
        raise InvalidOperation(text)
    return amount


def _metric(detection: Detection, file_name: str, charge_types: Iterable[str], explicit: str | None) -> str:
    if explicit:
        return explicit
    if detection.format is FOCUS:
        return "FocusCost"
    lowered = file_name.lower()
    if "amortized" in lowered or "amortised" in lowered:
        return "AmortizedCost"
    if "actual" in lowered:
        return "ActualCost"
    # Unused reservation / savings plan rows exist only in amortized data.
    if any(t.strip().lower().startswith("unused") for t in charge_types):
        return "AmortizedCost"
    return detection.format.default_metric


def _read_limited(path: Path, settings: Settings) -> bytes:
    limit = settings.max_upload_mb * 1024 * 1024
    size = path.stat().st_size
    if size > limit:
        raise FileRefusedError(
            f"{path.name} is {size / 2**20:,.1f} MB, over the import limit of {settings.max_upload_mb} MB "
            "(MAX_UPLOAD_MB); split the export by month or raise the limit"
        )
    data = path.read_bytes()
    if data.startswith(GZIP_MAGIC):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                data = fh.read(limit * MAX_GZIP_RATIO + 1)
        except (OSError, EOFError) as exc:
            raise FileRefusedError(f"{path.name} looks gzip-compressed but does not decompress ({exc})") from None
        if len(data) > limit * MAX_GZIP_RATIO:
            raise FileRefusedError(
                f"{path.name} decompresses to more than {settings.max_upload_mb * MAX_GZIP_RATIO} MB; "
                "split the export or raise MAX_UPLOAD_MB"
            )
    return data


def prepare_file(path: Path, settings: Settings, *, metric: str | None = None) -> PreparedFile:
    """Check and cut one file; raises FileRefusedError (with what to do) before anything is handed out."""
    path = Path(path)
    if not path.is_file():
        raise FileRefusedError(f"{path} is not a file")
    data = _read_limited(path, settings)
    sha = hashlib.sha256(data).hexdigest()
    if data.startswith(PARQUET_MAGIC):
        return _prepare_parquet(path, data, sha, settings, metric)
    return _prepare_csv(path, data, sha, settings, metric)


def prepare_csv_bytes(data: bytes, settings: Settings, *, name: str, metric: str | None = None) -> PreparedFile:
    """The CSV checks and cutting of `prepare_file` for bytes already in memory (e.g. a Cost Details blob)."""
    return _prepare_csv(Path(name), data, hashlib.sha256(data).hexdigest(), settings, metric)


def _prepare_csv(path: Path, data: bytes, sha: str, settings: Settings, metric: str | None) -> PreparedFile:
    if data.startswith(BOM):
        data = data[len(BOM) :]  # from the header only: rows keep their bytes
    if not data.strip():
        raise FileRefusedError(f"{path.name} is empty; export the cost data again")
    ends = record_ends(data)
    header_bytes = data[: ends[0]]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefusedError(
            f"{path.name} is not UTF-8 text (byte {exc.start}); save or export it as UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    try:
        detection = detect(header, file_name=path.name)
    except UnrecognisedFileError as exc:
        raise FileRefusedError(str(exc)) from None
    rows = list(reader)
    starts, stops = ends[:-1], ends[1:]
    if len(rows) != len(starts):
        raise FileRefusedError(
            f"{path.name}: found {len(starts)} records but the CSV parser read {len(rows)} rows; the file may "
            "use bare CR line endings or an unbalanced quote. Re-export it as standard CSV"
        )
    fmt = detection.format
    index = {name.strip().lower(): i for i, name in enumerate(header)}

    def col(candidates: tuple[str, ...]) -> int | None:
        found = detection.column(candidates)
        return None if found is None else index[found.strip().lower()]

    i_day, i_cost, i_extra, i_cur = (
        col(fmt.date_columns),
        col(fmt.cost_columns),
        col(fmt.extra_cost_columns),
        col(fmt.currency_columns),
    )
    i_scopes = [index[c.lower()] for c in fmt.scope_columns if c.lower() in index]
    i_charge = col(("ChargeType", "ChargeCategory"))
    line_end = b"\r\n" if header_bytes.endswith(b"\r\n") else b"\n"
    if not header_bytes.endswith(b"\n"):
        header_bytes += line_end

    day_cache: dict[str, date | None] = {}
    groups: dict[tuple[str, date | None], list[int]] = {}
    totals: dict[tuple[str, date | None, str], GroupTotal] = {}
    invalid = blank = unparsed = 0
    charge_types: set[str] = set()
    total = Decimal(0)
    for r, row in enumerate(rows):
        if not row or all(not f.strip() for f in row):
            blank += 1
            continue
        raw_day = row[i_day] if i_day is not None and i_day < len(row) else ""
        if raw_day not in day_cache:
            day_cache[raw_day] = parse_day(raw_day)
        day = day_cache[raw_day]
        unparsed += day is None
        scope = next((row[i].strip() for i in i_scopes if i < len(row) and row[i].strip().lower() not in NULLS), "")
        key = (scope, day)
        groups.setdefault(key, []).append(r)
        currency = row[i_cur].strip() if i_cur is not None and i_cur < len(row) else ""
        group = totals.get((*key, currency)) or totals.setdefault(
            (*key, currency), GroupTotal(scope, day, currency=currency or None)
        )
        group.rows += 1
        if i_charge is not None and i_charge < len(row):
            charge_types.add(row[i_charge])
        try:
            amount = parse_amount(row[i_cost]) if i_cost is not None and i_cost < len(row) else None
            extra = parse_amount(row[i_extra]) if i_extra is not None and i_extra < len(row) else None
        except InvalidOperation:
            invalid += 1
            continue
        if amount is not None:
            group.cost += amount
            total += amount
        if extra is not None:
            group.extra += extra
    row_count = sum(t.rows for t in totals.values())
    # A header without rows is what Azure writes for a period without cost: imported, nothing to load.
    notes = [] if row_count else [f"{path.name} has a header ({detection.format.name}) but no rows: nothing to load"]
    chosen = _metric(detection, path.name, charge_types, metric)
    modulus, fingerprints = delivery.sample(groups, delivery.csv_fingerprints(rows, header))
    budget = payload_budget(settings)
    chunks: list[RawChunk] = []
    fetched_at = datetime.now(UTC).isoformat()
    for (scope, day), members in groups.items():
        pieces: list[list[bytes]] = [[]]
        size = len(header_bytes)
        for r in members:
            record = data[starts[r] : stops[r]]
            if not record.endswith(b"\n"):
                record += line_end
            if len(header_bytes) + len(record) > budget:
                raise FileRefusedError(
                    f"{path.name}: row {r + 2} is {len(record):,} bytes, more than one Kafka message may carry "
                    f"({budget:,} bytes); raise KAFKA_MAX_MESSAGE_BYTES"
                )
            if size + len(record) > budget:
                pieces.append([])
                size = len(header_bytes)
            pieces[-1].append(record)
            size += len(record)
        for n, piece in enumerate(pieces):
            chunks.append(
                RawChunk(
                    source=SOURCE,
                    format=fmt.payload_format,
                    content_type=ContentType.csv,
                    key=_key(scope, day, sha),
                    payload=header_bytes + b"".join(piece),
                    meta=_meta(path, sha, detection, chosen, scope, day, len(piece), n, len(pieces), fetched_at),
                )
            )
    return PreparedFile(
        path=path,
        sha256=sha,
        detection=detection,
        metric=chosen,
        chunks=chunks,
        totals=totals,
        row_count=row_count,
        total_cost=total,
        cost_column=header[i_cost] if i_cost is not None else "",
        invalid_amounts=invalid,
        blank_lines=blank,
        unparsed_days=unparsed,
        notes=notes,
        modulus=modulus,
        fingerprints=fingerprints,
    )


def _prepare_parquet(path: Path, data: bytes, sha: str, settings: Settings, metric: str | None) -> PreparedFile:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRefusedError(f"{path.name} starts like Parquet but cannot be read ({exc}); export it again") from None
    try:
        detection = detect(table.schema.names, file_name=path.name)
    except UnrecognisedFileError as exc:
        raise FileRefusedError(str(exc)) from None
    # FOCUS and Azure's ActualCost / AmortizedCost exports alike (Azure writes Parquet with Snappy).
    fmt = detection.format
    notes = [] if table.num_rows else [f"{path.name} has no rows: nothing to load"]

    def strings(candidates: tuple[str, ...]) -> list[str | None] | None:
        name = detection.column(candidates)
        return None if name is None else pc.cast(table[name], pa.string()).to_pylist()

    days_raw = strings(fmt.date_columns) or [None] * table.num_rows
    costs = strings(fmt.cost_columns) or [None] * table.num_rows
    extras = strings(fmt.extra_cost_columns) or [None] * table.num_rows
    currencies = strings(fmt.currency_columns) or [None] * table.num_rows
    scope_lists = [strings((c,)) for c in fmt.scope_columns]
    scope_lists = [s for s in scope_lists if s is not None]
    day_cache: dict[str | None, date | None] = {}
    keys: list[tuple[str, date | None]] = []
    totals: dict[tuple[str, date | None, str], GroupTotal] = {}
    invalid = unparsed = 0
    total = Decimal(0)
    for r in range(table.num_rows):
        raw_day = days_raw[r]
        if raw_day not in day_cache:
            day_cache[raw_day] = None if raw_day is None else parse_day(raw_day)
        day = day_cache[raw_day]
        unparsed += day is None
        scope = next((s[r].strip() for s in scope_lists if s[r] and s[r].strip().lower() not in NULLS), "")
        key = (scope, day)
        keys.append(key)
        currency = (currencies[r] or "").strip()
        group = totals.get((*key, currency)) or totals.setdefault(
            (*key, currency), GroupTotal(scope, day, currency=currency or None)
        )
        group.rows += 1
        try:
            amount = None if costs[r] is None else parse_amount(costs[r])
            extra = None if extras[r] is None else parse_amount(extras[r])
        except InvalidOperation:
            invalid += 1
            continue
        if amount is not None:
            group.cost += amount
            total += amount
        if extra is not None:
            group.extra += extra
    charge = detection.column(("ChargeType", "ChargeCategory"))
    charge_types = set(pc.unique(table[charge].cast(pa.string())).to_pylist()) - {None} if charge else set()
    chosen = _metric(detection, path.name, charge_types, metric)
    order: dict[tuple[str, date | None], list[int]] = {}
    for r, key in enumerate(keys):
        order.setdefault(key, []).append(r)
    modulus, fingerprints = delivery.sample(order, delivery.table_fingerprints(table))
    budget = payload_budget(settings)
    fetched_at = datetime.now(UTC).isoformat()
    chunks: list[RawChunk] = []
    for (scope, day), members in order.items():
        pieces = parquet_pieces(table.take(pa.array(np.array(members, dtype=np.int64))), budget=budget)
        for n, (piece, payload) in enumerate(pieces):
            chunks.append(
                RawChunk(
                    source=SOURCE,
                    format=fmt.payload_format,
                    content_type=ContentType.parquet,
                    key=_key(scope, day, sha),
                    payload=payload,
                    meta=_meta(path, sha, detection, chosen, scope, day, piece.num_rows, n, len(pieces), fetched_at),
                )
            )
    return PreparedFile(
        path=path,
        sha256=sha,
        detection=detection,
        metric=chosen,
        chunks=chunks,
        totals=totals,
        row_count=table.num_rows,
        total_cost=total,
        cost_column=detection.column(fmt.cost_columns) or "",
        invalid_amounts=invalid,
        unparsed_days=unparsed,
        notes=notes,
        modulus=modulus,
        fingerprints=fingerprints,
    )


def _key(scope: str, day: date | None, sha: str) -> str:
    scope = scope or f"file:{sha[:16]}"
    return f"{scope}|{day.isoformat()}" if day else scope


def _meta(path, sha, detection, metric, scope, day, rows, index, count, fetched_at) -> dict[str, str]:
    meta = {
        "source": SOURCE,
        "file_name": path.name,
        "file_sha256": sha,
        "file_format": detection.format.name,
        "metric": metric,
        "scope": scope,
        "row_count": str(rows),
        "chunk_index": str(index),
        "chunk_count": str(count),
        "fetched_at": fetched_at,
    }
    if scope and "/" not in scope:
        meta["subscription_id"] = scope
    if day:
        meta["window_start"] = meta["window_end"] = day.isoformat()
    return meta


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of an import because its content was imported before (or earlier in the same import)."""

    path: Path
    sha256: str
    previous: ImportedFile

    @property
    def message(self) -> str:
        prev = self.previous
        when = f", imported {prev.imported_at:%Y-%m-%d %H:%M} UTC" if prev.imported_at else ""
        where = f" in batch {prev.batch_id}" if prev.batch_id else " earlier in this import"
        return (
            f"{self.path.name} has the same content (sha256 {self.sha256[:12]}...) as {prev.name}{when}{where} "
            f"({prev.rows} rows, total {prev.total}): skipped, nothing imported again"
        )


class FileSource:
    """One or more files as a CostSource. Every file is checked and cut before the first chunk is
    yielded, so a refused file raises FileRefusedError with nothing handed out. Files whose content
    was imported before are skipped (`skipped`, with a message). `commit` records the per-(scope,
    day) row counts and exact totals in the cursor table (source "file") and the files' sha256, then
    calls `on_commit` (the inbox moves the file to processed/ there: only once bronze holds it)."""

    name = SOURCE

    def __init__(
        self,
        settings: Settings,
        paths: Iterable[Path],
        *,
        cursors: CursorStore,
        metric: str | None = None,
        on_commit: Callable[[], None] | None = None,
        pending: dict[str, ImportedFile] | None = None,
    ) -> None:
        from backend.sources.fx import is_rates_file

        self.settings = settings
        paths = [Path(p) for p in paths]
        # FX rates files are reference data written straight to silver (backend/sources/fx.py), not cost
        # rows for Kafka: set aside here for the caller to import with `fx.import_rates`.
        self.rates_paths = [p for p in paths if is_rates_file(p)]
        self.paths = [p for p in paths if p not in self.rates_paths]
        self.cursors = cursors
        self.metric = metric
        self.on_commit = on_commit
        # sha256 -> file sent by another source of the same run but not committed yet (the inbox scan's).
        self.pending = pending if pending is not None else {}
        self.prepared: list[PreparedFile] = []
        self.skipped: list[SkippedFile] = []
        self.committed = False
        self._checked = False

    def check(self) -> list[PreparedFile]:
        """Prepare every file (raising FileRefusedError for a bad one) and set aside already-imported ones."""
        if self._checked:
            return self.prepared
        seen: dict[str, ImportedFile] = dict(self.pending)
        prepared, skipped = [], []
        stored: dict[str, list[ImportedFile]] = {}
        for ready in self._prepare_all():
            previous = seen.get(ready.sha256) or self.cursors.imported_file(ready.sha256)
            if previous is not None:
                skipped.append(SkippedFile(ready.path, ready.sha256, previous))
                continue
            if ready.dataset not in stored:
                stored[ready.dataset] = self.cursors.imported_files(ready.dataset)
            self._decide(ready, [*stored[ready.dataset], *(f for f in seen.values() if f.dataset == ready.dataset)])
            seen[ready.sha256] = _imported(ready)
            prepared.append(ready)
        self.prepared, self.skipped, self._checked = prepared, skipped, True
        return prepared

    def _prepare_all(self) -> list[PreparedFile]:
        """Every file, a folder as one export delivery (its manifest's parts, checked against its row counts)."""
        out: list[PreparedFile] = []
        for path in self.paths:
            if not path.is_dir():
                out.append(prepare_file(path, self.settings, metric=self.metric))
                continue
            try:
                found = manifest.read_delivery(path)
            except manifest.ManifestError as exc:
                raise FileRefusedError(str(exc)) from None
            parts = [prepare_file(p.path, self.settings, metric=found.metric or self.metric) for p in found.parts]
            for part, ready in zip(found.parts, parts, strict=True):
                if part.rows is not None and part.rows != ready.row_count:
                    raise FileRefusedError(
                        f"{ready.path.name}: the manifest says {part.rows} rows, the file has {ready.row_count}; "
                        "the part is incomplete or from another run. Copy the run's files again"
                    )
                ready.delivery_id = found.run_id
                ready.notes.append(found.describe())
            read = sum(r.row_count for r in parts)
            if found.rows is not None and found.rows != read:
                raise FileRefusedError(
                    f"{path}: the manifest says {found.rows} rows in all, its parts hold {read}; copy the run again"
                )
            log.info("delivery %s", found.describe())
            out.extend(parts)
        return out

    def _decide(self, ready: PreparedFile, earlier: list[ImportedFile]) -> None:
        """Replace or add (delivery.py); the parts of one manifest's run are one delivery and never replace each other."""
        own_id = ready.delivery_id or ready.sha256[:16]
        if ready.delivery_id:
            # Parts of this run committed by an earlier import: this one adds to them. Parts in this
            # import are one unit with it (the same delivery id), which replaces earlier runs' days.
            committed = [f for f in earlier if f.delivery_id == ready.delivery_id and f.batch_id]
            ready.decision = (
                delivery.Decision(delivery.ADD, f"a further part of export run {ready.delivery_id}", own_id)
                if committed
                else delivery.Decision(
                    delivery.REPLACE, f"export run {ready.delivery_id}: replaces earlier runs' days", own_id
                )
            )
        else:
            ready.decision = delivery.decide(ready.fingerprints, ready.modulus, earlier, own_id=own_id)
        for chunk in ready.chunks:
            chunk.meta["delivery_id"] = own_id
            chunk.meta["delivery_mode"] = ready.decision.mode
        log.info("%s: %s", ready.path.name, ready.decision.detail)

    def fetch(self, batch_id: str) -> Iterator[RawChunk]:
        self.check()
        for skip in self.skipped:
            log.warning("import: %s", skip.message)
        fetched_at = datetime.now(UTC)
        cursor_rows: dict[tuple[str, str, date, str], CursorRow] = {}
        chunks = 0
        for prepared in self.prepared:
            log.info(
                "importing %s: %s, %s, %d rows, %d chunks, total %s %s",
                prepared.path.name,
                prepared.detection.describe(),
                prepared.metric,
                prepared.row_count,
                len(prepared.chunks),
                prepared.total_cost,
                prepared.cost_column,
            )
            if prepared.invalid_amounts:
                log.warning(
                    "%s: %d row(s) have an amount that is not a number; they go to silver's quarantine",
                    prepared.path.name,
                    prepared.invalid_amounts,
                )
            for chunk in prepared.chunks:
                chunk.meta["batch_id"] = batch_id
                chunks += 1
                yield chunk
            for (scope, day, currency), group in prepared.totals.items():
                if day is None:
                    continue
                row = CursorRow(
                    source=SOURCE,
                    scope=scope or f"file:{prepared.sha256[:16]}",
                    metric=prepared.metric,
                    day=day,
                    fetched_at=fetched_at,
                    row_count=group.rows,
                    reported_total=group.cost,
                    currency=group.currency,
                    adds=prepared.adds,
                )
                # Files of one import that add to each other sum here; a re-delivery overwrites.
                key = (scope, prepared.metric, day, currency)
                earlier = cursor_rows.get(key)
                cursor_rows[key] = row if earlier is None or not prepared.adds else _combined(earlier, row)
        self.cursors.stage(
            batch_id,
            SOURCE,
            cursor_rows.values(),
            chunk_count=chunks,
            files=[_imported(p) for p in self.prepared],
        )

    def commit(self, batch_id: str) -> None:
        self.cursors.commit(batch_id)
        self.committed = True
        if self.on_commit is not None:
            self.on_commit()


def _combined(earlier: CursorRow, row: CursorRow) -> CursorRow:
    """Two files' totals of one day in one import: summed, and adding to what is stored only if both add."""
    summed = row.added_to(CursorRow(**{**earlier.__dict__, "adds": False}))
    return CursorRow(**{**summed.__dict__, "adds": earlier.adds and row.adds})


def _imported(prepared: PreparedFile) -> ImportedFile:
    return ImportedFile(
        name=prepared.path.name,
        sha256=prepared.sha256,
        rows=prepared.row_count,
        total=prepared.total_cost,
        dataset=prepared.dataset,
        delivery_id=prepared.decision.delivery_id if prepared.decision else prepared.sha256[:16],
        modulus=prepared.modulus,
        fingerprints=prepared.fingerprints,
    )


# --- the watched inbox ------------------------------------------------------------------------
Deliver = Callable[[FileSource, str], None]


@dataclass
class InboxResult:
    file_name: str
    # imported / sent (moves once bronze holds it) / skipped (its content was imported before) / refused / failed
    status: str
    detail: str
    moved_to: Path | None = None


class InboxError(RuntimeError):
    """Some inbox files failed for a reason other than their content; they stay in the inbox for the next run."""


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.stem}.{datetime.now(UTC):%Y%m%dT%H%M%S}.{uuid.uuid4().hex[:6]}{path.suffix}"
    shutil.move(str(path), target)
    return target


def _set_aside(path: Path, folder: Path, reason: str) -> Path:
    target = _move(path, folder)
    target.with_name(target.name + ".error.txt").write_text(reason + "\n", encoding="utf-8")
    return target


def scan_inbox(
    settings: Settings,
    *,
    deliver: Deliver,
    cursors: CursorStore,
    metric: str | None = None,
    rates: Callable[[Path], str] | None = None,
    on_settled: Callable[[str, str, str], None] | None = None,
) -> list[InboxResult]:
    """Import every file in settings.inbox_dir.

    - `on_settled(name, "processed" | "rejected", reason)` hears where each entry went (the S3 inbox
      moves its copy on the bucket to match: backend/sources/remote_inbox.py).

    - An FX rates file (backend/sources/fx.py) goes to `rates` (which imports it and says what changed)
      when given, then to processed/; refused (FileRefusedError), to rejected/ with its `.error.txt`.

    - A file is checked first; a refused one moves to inbox/rejected/ next to a `<name>.error.txt`
      saying why, and one whose content was imported before moves there too, its `.error.txt`
      naming the earlier import. Neither sends anything.
    - An accepted file is delivered and moves to inbox/processed/ only when its batch is committed,
      i.e. once bronze durably holds its rows. With the pipeline's `deliver` that happens in the
      bronze step (status "sent" here, the result is updated in place then); a batch that never
      reaches bronze leaves the file in the inbox, and the next scan sends it again.
    - A file whose delivery fails for another reason (Kafka down) stays where it is for the next run,
      and InboxError is raised after the others.
    """
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    processed, rejected = inbox / "processed", inbox / "rejected"
    settled = on_settled or (lambda name, outcome, reason: None)

    def _reject(path: Path, folder: Path, reason: str) -> Path:
        target = _set_aside(path, folder, reason)
        settled(path.name, "rejected", reason)
        return target

    def _processed(path: Path, folder: Path, result: InboxResult) -> None:
        _move_processed(path, folder, result)
        if result.status == "imported":
            settled(path.name, "processed", "")

    results: list[InboxResult] = []
    failures: list[str] = []
    pending: dict[str, ImportedFile] = {}  # sent by this scan, not committed yet: a second copy is a duplicate
    for path in sorted(inbox.iterdir()):
        # Hidden and partial files are still being written by whoever drops them here. A folder is an
        # export run, taken only once its manifest.json is there (Cost Management writes it last).
        if path.name.startswith(".") or path.suffix.lower() in (".part", ".tmp", ".crdownload"):
            continue
        if path.is_dir() and (path in (processed, rejected) or not any(path.rglob(manifest.MANIFEST))):
            continue
        if rates is not None and path.is_file():
            from backend.sources.fx import is_rates_file

            if is_rates_file(path):
                results.append(_import_rates(path, rates, processed, rejected, failures))
                if results[-1].status in ("imported", "refused"):
                    settled(
                        path.name, "processed" if results[-1].status == "imported" else "rejected", results[-1].detail
                    )
                continue
        result = InboxResult(path.name, "sent", "")
        source = FileSource(
            settings,
            [path],
            cursors=cursors,
            metric=metric,
            on_commit=lambda path=path, result=result: _processed(path, processed, result),
            pending=pending,
        )
        prepared: list[PreparedFile] = []
        try:
            prepared = source.check()
            if not prepared:
                skip = source.skipped[0]
                result.status, result.detail = "skipped", skip.message
                result.moved_to = _reject(path, rejected, skip.message)
                log.warning("inbox: %s", skip.message)
                results.append(result)
                continue
            ready = prepared[0]
            result.detail = (
                f"{ready.detection.describe()}; {ready.metric}; {sum(p.row_count for p in prepared)} rows; "
                f"total {sum(p.total_cost for p in prepared)} ({ready.cost_column})"
                + (f"; {len(prepared)} parts" if len(prepared) > 1 else "")
            )
            for part in prepared:
                pending[part.sha256] = _imported(part)
            deliver(source, f"file-{uuid.uuid4().hex[:16]}")
        except FileRefusedError as exc:
            result.status, result.detail = "refused", str(exc)
            result.moved_to = _reject(path, rejected, str(exc))
            log.warning("inbox: refused %s: %s", path.name, exc)
            results.append(result)
            continue
        except Exception as exc:  # recorded, logged, and re-raised below as InboxError
            log.exception("inbox: delivering %s failed; it stays in the inbox", path.name)
            for part in prepared:
                pending.pop(part.sha256, None)  # not sent after all: a copy later in the scan may go
            failures.append(f"{path.name}: {exc}")
            results.append(InboxResult(path.name, "failed", str(exc)))
            continue
        if not source.committed:
            log.info("inbox: sent %s (%s); it stays in the inbox until bronze holds it", path.name, result.detail)
            result.detail += "; moves to processed/ once bronze holds its rows"
        results.append(result)
    if failures:
        raise InboxError("inbox files could not be delivered: " + "; ".join(failures))
    return results


def _import_rates(
    path: Path, rates: Callable[[Path], str], processed: Path, rejected: Path, failures: list[str]
) -> InboxResult:
    """An FX rates file from the inbox: imported at once (it does not wait for bronze), then moved."""
    try:
        detail = rates(path)
    except FileRefusedError as exc:
        log.warning("inbox: refused %s: %s", path.name, exc)
        return InboxResult(path.name, "refused", str(exc), _set_aside(path, rejected, str(exc)))
    except Exception as exc:  # recorded, logged, and re-raised by the scan as InboxError
        log.exception("inbox: importing rates file %s failed; it stays in the inbox", path.name)
        failures.append(f"{path.name}: {exc}")
        return InboxResult(path.name, "failed", str(exc))
    result = InboxResult(path.name, "imported", detail)
    _move_processed(path, processed, result)
    return result


def _move_processed(path: Path, folder: Path, result: InboxResult) -> None:
    """After the commit: the file's rows are in bronze, so it leaves the inbox."""
    try:
        result.moved_to = _move(path, folder)
    except OSError:
        # Its rows are in bronze and recorded: the next scan finds the same content and sets it aside
        # (rejected/, naming this import), so nothing is imported twice.
        log.exception("inbox: %s is imported but could not be moved to %s", path.name, folder)
        result.detail += "; imported, but could not be moved to processed/"
    else:
        result.status = "imported"
        log.info("inbox: imported %s -> %s", path.name, result.moved_to)
