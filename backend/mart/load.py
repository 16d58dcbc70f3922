"""Gold -> mart loader: COPY into staging, stable-key dimension upserts, and a month-partition swap in ONE transaction.

Write semantics: for every month loaded, the mart ends up holding exactly gold's rows for that month.
All of it (dimensions, the fact partitions, aggregates, tags, the load's status) commits together, so a
failed or killed load leaves the previous state intact and readers never see a half-loaded month.

How:
1. Read gold cost_daily month by month (Arrow via delta-rs; string columns as Parquet dictionaries).
2. Dimensions: distinct natural keys COPYed into a temp staging table, `INSERT ... ON CONFLICT DO
   NOTHING/UPDATE` (keys are never regenerated; attributes such as a renamed subscription update in
   place), then the key map comes back and the fact rows get their keys in Arrow (a hash lookup). A
   member already sent by this load with the same attributes is not sent again.
3. Fact: per month, binary COPY (encoded slice by slice as Postgres reads) into a fresh table created
   in its own transaction (COPY FREEZE, only a BRIN index, built after the copy), then DETACH + DROP the
   old month partition and ATTACH the new one.
4. Aggregates for those months (daily, monthly, resource x month) are rebuilt from the new rows; tag
   tables from gold.

An increment (`days`: gold rewrote only some days of a month the mart already holds) replaces just those
days' fact and daily-aggregate rows in place, in the same transaction: the month's dimensions and its
resource x month aggregate still come from the whole month, so the result is the same as a month load.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import sqlalchemy as sa

from backend.config import Settings
from backend.lake.catalog import (
    GOLD_COST_BY_TAG,
    GOLD_COST_CHANGES,
    GOLD_COST_DAILY,
    GOLD_MONTHLY_SUMMARY,
    GOLD_RESOURCE_TAGS,
)
from backend.lake.delta import Lake
from backend.mart import locks
from backend.mart.db import owner_engine
from backend.mart.model import AGG_KEYS, DIMENSIONS, FACT_COLUMNS, FACT_MEASURES, Dimension

log = logging.getLogger(__name__)

LOAD_LOCK = locks.LOAD
# Staging tables live outside `mart` (which the reader can read) until the swap moves them in.
STAGE_SCHEMA = "mart_stage"
COPY_WORKERS = 2  # months COPYed at once, each by its own backend
_SEP = "\x1f"  # joins multi-column natural keys; a control character no name contains


@dataclass
class LoadStats:
    """What one load did."""

    load_id: int
    months: list[str]
    rows_in: int = 0
    rows_loaded: int = 0
    rows_replaced: int = 0
    dims_added: dict[str, int] = field(default_factory=dict)
    tag_rows: int = 0
    days: dict[str, list[str]] = field(default_factory=dict)  # months replaced in place: only these days
    gold_versions: dict[str, int | None] = field(default_factory=dict)
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)


class LoadError(RuntimeError):
    """Gold data the mart cannot take (e.g. a row whose dimension key could not be resolved)."""


def _engine(target: Settings | sa.Engine | str) -> tuple[sa.Engine, bool]:
    if isinstance(target, sa.Engine):
        return target, False
    url = target.database_url if isinstance(target, Settings) else target
    if not url:
        raise ValueError("no mart URL: pass the runtime's Endpoints.database_url (embedded) or an engine")
    return owner_engine(url, poolclass=sa.pool.NullPool), True


def _month_bounds(month: str) -> tuple[dt.date, dt.date]:
    year, mon = (int(p) for p in month.split("-"))
    start = dt.date(year, mon, 1)
    return start, start + dt.timedelta(days=calendar.monthrange(year, mon)[1])


def _partition_name(month: str) -> str:
    _month_bounds(month)  # validates "YYYY-MM" before it reaches an identifier
    return "fact_cost_daily_" + month.replace("-", "_")


# --- COPY -----------------------------------------------------------------------------------
# Postgres binary COPY: parsing numeric text is most of a CSV COPY's server time; binary rows built with
# numpy halve it (measured: 1M fact rows 1.4 s binary vs 3.2 s CSV). Rows are fixed-width, so columns
# with some (not all) nulls, or decimals beyond int64 unscaled, fall back to CSV.
_PG_EPOCH_DAYS = 10957  # 1970-01-01 -> 2000-01-01
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_BINARY_TRAILER = b"\xff\xff"
_BINARY_CHUNK_ROWS = 32_768  # ~7 MB of fact tuples per read()


def _decimal_unscaled(array: pa.Array) -> np.ndarray | None:
    """The int64 unscaled values of a decimal128 array without nulls, or None when one does not fit."""
    words = np.frombuffer(array.buffers()[1], dtype="<i8", count=2 * (len(array) + array.offset))
    low, high = words[2 * array.offset :: 2], words[2 * array.offset + 1 :: 2]
    fits = ((high == 0) & (low >= 0)) | ((high == -1) & (low < 0) & (low > np.iinfo(np.int64).min))
    return low if fits.all() else None


def _binary_compatible(table: pa.Table) -> bool:
    for column in table.columns:
        kind = column.type
        if column.null_count == len(column):
            continue
        if column.null_count:
            return False
        if pa.types.is_decimal(kind):
            if kind.scale != 12 or any(_decimal_unscaled(chunk) is None for chunk in column.chunks):
                return False
        elif not (pa.types.is_date32(kind) or pa.types.is_int32(kind) or pa.types.is_int64(kind)):
            return False
    return True


def _binary_rows(table: pa.Table) -> bytes:
    """COPY BINARY tuples for `table` (checked by `_binary_compatible`), built column-wise with numpy."""
    n = table.num_rows
    fields: list[tuple] = [("nfields", ">i2")]
    values: dict[str, object] = {"nfields": table.num_columns}
    for i, column in enumerate(table.columns):
        kind = column.type
        if column.null_count == n:
            fields.append((f"l{i}", ">i4"))
            values[f"l{i}"] = -1  # NULL
            continue
        array = column.combine_chunks()
        if pa.types.is_date32(kind):
            fields += [(f"l{i}", ">i4"), (f"v{i}", ">i4")]
            values |= {f"l{i}": 4, f"v{i}": array.cast(pa.int32()).to_numpy() - _PG_EPOCH_DAYS}
        elif pa.types.is_int32(kind):
            fields += [(f"l{i}", ">i4"), (f"v{i}", ">i4")]
            values |= {f"l{i}": 4, f"v{i}": array.to_numpy()}
        elif pa.types.is_int64(kind):
            fields += [(f"l{i}", ">i4"), (f"v{i}", ">i8")]
            values |= {f"l{i}": 8, f"v{i}": array.to_numpy()}
        else:
            # numeric: ndigits=5 base-10000 digits, weight=1 (two integer digits: < 1e8), sign, dscale=12;
            # Postgres strips the leading/trailing zero digits itself.
            unscaled = _decimal_unscaled(array)
            magnitude = np.abs(unscaled)
            whole, frac = magnitude // 10**12, magnitude % 10**12
            head = np.empty((n, 4), np.int16)
            head[:, 0], head[:, 1], head[:, 3] = 5, 1, 12
            head[:, 2] = np.where(unscaled < 0, 0x4000, 0)
            digits = np.empty((n, 5), np.int16)
            digits[:, 0], digits[:, 1] = whole // 10_000, whole % 10_000
            digits[:, 2], digits[:, 3], digits[:, 4] = frac // 10**8, frac // 10**4 % 10**4, frac % 10**4
            fields += [(f"l{i}", ">i4"), (f"h{i}", ">i2", (4,)), (f"d{i}", ">i2", (5,))]
            values |= {f"l{i}": 18, f"h{i}": head, f"d{i}": digits}
    rows = np.empty(n, dtype=np.dtype(fields))
    for name, value in values.items():
        rows[name] = value
    return rows.tobytes()


class _CopySource:
    """A file-like object COPY FROM STDIN reads: each read() encodes the next slice of the table (binary
    when the columns allow, else CSV). Encoding on demand in the COPY's own thread replaces a pipe and a
    writer thread: every byte was copied twice more through the kernel that way, which on 5M fact rows
    (~1 GB of binary tuples) cost seconds of system CPU. An encoding error raised here aborts the COPY
    (psycopg2 ends it with an error), so the transaction fails rather than committing a truncated copy."""

    def __init__(self, table: pa.Table, *, binary: bool) -> None:
        self._parts = self._binary(table) if binary else self._csv(table)
        self.error: Exception | None = None

    @staticmethod
    def _binary(table: pa.Table) -> Iterator[bytes]:
        yield _BINARY_HEADER
        for offset in range(0, table.num_rows, _BINARY_CHUNK_ROWS):
            yield _binary_rows(table.slice(offset, _BINARY_CHUNK_ROWS))
        yield _BINARY_TRAILER

    @staticmethod
    def _csv(table: pa.Table) -> Iterator[bytes]:
        options = pacsv.WriteOptions(include_header=False)
        for offset in range(0, table.num_rows, _BINARY_CHUNK_ROWS):
            sink = pa.BufferOutputStream()
            pacsv.write_csv(table.slice(offset, _BINARY_CHUNK_ROWS), sink, write_options=options)
            yield sink.getvalue().to_pybytes()

    def read(self, size: int = -1) -> bytes:  # size is a hint: psycopg2 sends whatever comes back
        try:
            return next(self._parts, b"")
        except Exception as exc:
            self.error = exc  # psycopg2 turns it into QueryCanceled; the caller re-raises the cause
            raise


def _copy_arrow(cur, table: pa.Table, target: str, *, freeze: bool = False) -> None:
    """COPY an Arrow table into `target` (columns by name), encoded slice by slice as Postgres reads, so a
    large month never sits in memory encoded."""
    if table.num_rows == 0:
        return
    binary = _binary_compatible(table)
    columns = ", ".join(table.column_names)
    options = "FORMAT binary" if binary else "FORMAT csv"
    if freeze:
        options += ", FREEZE true"
    source = _CopySource(table, binary=binary)
    try:
        cur.copy_expert(f"COPY {target} ({columns}) FROM STDIN WITH ({options})", source)
    except psycopg2.Error as exc:
        if source.error is not None:
            raise source.error from exc
        raise


# --- dimensions -----------------------------------------------------------------------------
def _text_key(table: pa.Table, columns: Sequence[str]) -> pa.ChunkedArray:
    arrays = [pc.fill_null(table[c].cast(pa.string()), "") for c in columns]
    if len(arrays) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*arrays, _SEP)


class _Codes:
    """Gold string columns as (codes, dictionary) once each (nulls become ""), shared by all dimensions.
    Columns read as dictionaries (see `_read_gold_month`) only need their chunks' dictionaries unified;
    plain string columns are hashed once here instead of once per use."""

    def __init__(self, gold: pa.Table) -> None:
        self.gold = gold
        self._cache: dict[str, tuple[np.ndarray, pa.Array]] = {}

    def __getitem__(self, column: str) -> tuple[np.ndarray, pa.Array]:
        if column not in self._cache:
            values = self.gold[column]
            coded = _dictionary_codes(values) if pa.types.is_dictionary(values.type) else None
            if coded is None:
                plain = values.cast(pa.string()) if pa.types.is_dictionary(values.type) else values
                encoded = pc.fill_null(plain, "").combine_chunks().dictionary_encode()
                coded = (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary)
            self._cache[column] = coded
        return self._cache[column]


def _dictionary_codes(values: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array] | None:
    """(codes, dictionary) of a dictionary-typed column with null rows mapped to "", or None when the
    dictionary itself holds nulls (mapping those to "" could duplicate a member; the caller re-encodes)."""
    if values.num_chunks == 0:
        return None
    unified = values.unify_dictionaries()
    dictionary = unified.chunks[0].dictionary.cast(pa.string())
    if dictionary.null_count:
        return None
    empty = pc.index(dictionary, "").as_py()
    if values.null_count and empty < 0:
        empty = len(dictionary)
        dictionary = pa.concat_arrays([dictionary, pa.array([""], pa.string())])
    codes = np.concatenate(
        [pc.fill_null(chunk.indices, max(empty, 0)).to_numpy(zero_copy_only=False) for chunk in unified.chunks]
    ).astype(np.int64)
    return codes, dictionary


def _gold_members(codes: _Codes, dim: Dimension) -> tuple[pa.Table, np.ndarray]:
    """Distinct members of `dim` in gold (mart column names; attributes: the greatest value per member, so
    a resource seen with and without a name keeps its name, deterministically) and each row's member."""
    combined = np.zeros(codes.gold.num_rows, dtype=np.int64)
    sizes = []
    for column in dim.gold_natural_columns:
        col_codes, dictionary = codes[column]
        sizes.append(len(dictionary))
        if np.prod(np.array(sizes, dtype=float)) >= 2**62:
            raise LoadError(f"{dim.name}: too many distinct natural key combinations to encode")
        combined = combined * len(dictionary) + col_codes
    row_member, unique = pd.factorize(combined, sort=False)
    columns: dict[str, pa.Array] = {}
    remainder = np.asarray(unique, dtype=np.int64)
    parts = []
    for size in reversed(sizes):
        parts.append(remainder % size)
        remainder = remainder // size
    for (mart_col, gold_col), part in zip(dim.natural, reversed(parts), strict=True):
        columns[mart_col] = codes[gold_col][1].take(pa.array(part))
    for mart_col, gold_col in dim.attributes:
        attr_codes, dictionary = codes[gold_col]
        # Rank the (small) dictionary so "greatest string" becomes "greatest integer" per member.
        order = pc.sort_indices(dictionary).to_numpy()
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        best = pd.Series(rank[attr_codes]).groupby(row_member).max().to_numpy()
        columns[mart_col] = dictionary.take(pa.array(order[best]))
    return pa.table(columns), row_member


def _distinct_members(gold: pa.Table, dim: Dimension, extra: list[pa.Table]) -> pa.Table:
    """Distinct natural keys (and one value per attribute) of `dim` in gold, renamed to mart columns."""
    natural = dim.gold_natural_columns
    parts = [gold]
    parts += [t for t in extra if all(c in t.column_names for c in natural)]
    frames = []
    for part in parts:
        present = [g for _, g in dim.attributes if g in part.column_names]
        projected = part.select(natural + present)
        for _, gold_col in dim.attributes:
            if gold_col not in present:
                projected = projected.append_column(gold_col, pa.nulls(projected.num_rows, pa.string()))
        frames.append(projected.cast(pa.schema([(c, pa.string()) for c in projected.column_names])))
    table = pa.concat_tables(frames)
    for name in table.column_names:
        table = table.set_column(table.column_names.index(name), name, pc.fill_null(table[name], ""))
    if dim.attributes:
        # One value per attribute: the greatest non-empty one, so a resource seen with and without a
        # name keeps its name; deterministic across reloads.
        grouped = table.group_by(natural).aggregate([(g, "max") for _, g in dim.attributes])
        grouped = grouped.rename_columns(natural + [g for _, g in dim.attributes])
    else:
        grouped = table.group_by(natural).aggregate([])
    mapping = dict(dim.natural + dim.attributes)
    mart_names = [next(m for m, g in mapping.items() if g == c) for c in grouped.column_names]
    return grouped.rename_columns(mart_names)


def _upsert_dimension(
    cur, dim: Dimension, members: pa.Table, *, update_attributes: bool = True
) -> tuple[pa.Table, int]:
    """Insert new members (attributes of existing ones updated in place unless `update_attributes` is
    False); returns (key map with columns [key, natural...], rows inserted)."""
    natural = dim.natural_columns
    attrs = [m for m, _ in dim.attributes]
    cols = natural + attrs
    stage = f"stage_{dim.table}"
    cur.execute(f"CREATE TEMP TABLE {stage} ({', '.join(f'{c} text NOT NULL' for c in cols)}) ON COMMIT DROP")
    _copy_arrow(cur, members.select(cols), stage)
    if attrs and update_attributes:
        updates = ", ".join(f"{a} = EXCLUDED.{a}" for a in attrs)
        changed = " OR ".join(f"d.{a} IS DISTINCT FROM EXCLUDED.{a}" for a in attrs)
        # The (none) member's attributes stay empty; other members follow gold (SCD type 1).
        conflict = f"DO UPDATE SET {updates} WHERE ({changed}) AND EXCLUDED.{natural[0]} <> ''"
    else:
        conflict = "DO NOTHING"
    cur.execute(
        f"INSERT INTO mart.{dim.table} AS d ({', '.join(cols)}) SELECT {', '.join(cols)} FROM {stage} "
        f"ORDER BY {', '.join(natural)} ON CONFLICT ({', '.join(natural)}) {conflict} "
        f"RETURNING (xmax = 0) AS inserted"
    )
    inserted = sum(1 for (is_new,) in cur.fetchall() if is_new)
    cur.execute(
        f"SELECT d.{dim.key}, {', '.join(f'd.{c}' for c in natural)} FROM mart.{dim.table} d "
        f"JOIN {stage} s USING ({', '.join(natural)})"
    )
    rows = cur.fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(len(natural) + 1)]
    cur.execute(f"DROP TABLE {stage}")
    key_map = pa.table(
        {
            dim.key: pa.array(columns[0], pa.int32()),
            **{c: pa.array(columns[i + 1], pa.string()) for i, c in enumerate(natural)},
        }
    )
    return key_map, inserted


class _KnownMembers:
    """Members this load already upserted (natural key + attributes as they were sent) and their keys, per
    dimension: a month whose members all match goes no further, so a five-month load sends 20k
    resources to the database once, not five times. A member that comes back with other attributes is
    upserted again, so the last month's attributes win exactly as if every month were sent."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[pa.Array, pa.Array, np.ndarray]] = {}  # natural text, full text, keys

    def keys(self, cur, dim: Dimension, members: pa.Table) -> tuple[np.ndarray, int]:
        """Each member's key (aligned with `members`) and how many members the database newly inserted."""
        natural_text = _text_key(members, dim.natural_columns).combine_chunks()
        full_text = _text_key(members, dim.natural_columns + [m for m, _ in dim.attributes]).combine_chunks()
        empty = pa.array([], pa.string())
        seen_natural, seen_full, seen_keys = self._seen.get(dim.name, (empty, empty, np.array([], np.int32)))
        positions = pc.index_in(full_text, value_set=seen_full)
        fresh = pc.is_null(positions).to_numpy(zero_copy_only=False)
        keys = np.empty(members.num_rows, np.int32)
        keys[~fresh] = seen_keys[pc.drop_null(positions).to_numpy()]
        if not fresh.any():
            return keys, 0
        mask = pa.array(fresh)
        new_members = members.filter(mask)
        key_map, inserted = _upsert_dimension(cur, dim, new_members)
        new_keys = _lookup_keys(new_members, dim, key_map, columns=dim.natural_columns).to_numpy()
        keys[fresh] = new_keys
        new_natural = natural_text.filter(mask)
        # A member re-sent with other attributes replaces its old entry.
        stay = pc.invert(pc.is_in(seen_natural, value_set=new_natural)).to_numpy(zero_copy_only=False)
        self._seen[dim.name] = (
            pa.concat_arrays([seen_natural.filter(pa.array(stay)), new_natural]),
            pa.concat_arrays([seen_full.filter(pa.array(stay)), full_text.filter(mask)]),
            np.concatenate([seen_keys[stay], new_keys.astype(np.int32)]),
        )
        return keys, inserted


def _lookup_keys(
    gold: pa.Table, dim: Dimension, key_map: pa.Table, *, columns: Sequence[str] | None = None
) -> pa.ChunkedArray:
    wanted = _text_key(gold, columns or dim.gold_natural_columns)
    known = _text_key(key_map, dim.natural_columns).combine_chunks()
    positions = pc.index_in(wanted, value_set=known)
    if positions.null_count:
        missing = pc.filter(wanted, pc.is_null(positions))[0].as_py()
        raise LoadError(f"{dim.name}: no key for natural key {missing!r}")
    return pc.take(key_map[dim.key], positions)


# --- the load -------------------------------------------------------------------------------
def _gold_months(lake: Lake, months: Sequence[str] | None) -> tuple[list[str], int]:
    """The months to load (validated) and the gold version every read of this load is pinned to."""
    if not lake.exists(GOLD_COST_DAILY.name):
        raise LoadError(f"gold table {GOLD_COST_DAILY.name} does not exist yet; run the gold job first")
    table = lake.table(GOLD_COST_DAILY.name)
    version = table.version()
    if months is None:
        months = {part["charge_month"] for part in table.partitions()}
    months = sorted(set(months))
    for month in months:
        _month_bounds(month)
    return months, version


def _load_days(months: Sequence[str], days: dict[str, Sequence[str]] | None) -> dict[str, list[dt.date]]:
    """`days` narrowed to the months being loaded, as dates, each checked to lie in its month."""
    narrowed: dict[str, list[dt.date]] = {}
    for month in months:
        if not days or not days.get(month):
            continue
        start, end = _month_bounds(month)
        dates = sorted({dt.date.fromisoformat(str(day)) for day in days[month]})
        if not start <= dates[0] <= dates[-1] < end:
            raise ValueError(f"days {dates[0]}..{dates[-1]} are not all in {month}")
        narrowed[month] = dates
    return narrowed


@dataclass
class _PreparedMonth:
    """One month of gold, sorted by date, with every dimension's distinct members and each row's member."""

    month: str
    gold: pa.Table
    members: dict[str, tuple[pa.Table, np.ndarray]]


# The gold columns the mart uses (gold's run_id and partition column stay behind).
_GOLD_USED = [
    "charge_date",
    *dict.fromkeys(g for dim in DIMENSIONS for _, g in (*dim.natural, *dim.attributes)),
    *FACT_MEASURES,
    "row_count",
]


def _read_gold_month(lake: Lake, month: str, version: int) -> pa.Table:
    """One month of gold cost_daily, with its string columns as dictionaries straight from Parquet.

    Parquet stores these columns dictionary-encoded already: reading them as dictionaries skips building
    a million strings per column and hashing them again for the dimensions (measured on one 1M-row month:
    read 1.5-2.0 s -> 0.5-0.7 s CPU, encoding 0.47 s -> 0.06 s)."""
    strings = [name for name in _GOLD_USED if pa.types.is_string(GOLD_COST_DAILY.schema.field(name).type)]
    dataset = lake.table(GOLD_COST_DAILY.name, version=version).to_pyarrow_dataset(
        parquet_read_options=ds.ParquetReadOptions(dictionary_columns=strings)
    )
    # A gold table written before a column was added (e.g. amortized_cost_converted) lacks it until its next
    # gold run: null there, as the rows gold would write for it without rates.
    present = [name for name in _GOLD_USED if name in dataset.schema.names]
    table = dataset.to_table(columns=present, filter=ds.field("charge_month") == month)
    columns = []
    for name in _GOLD_USED:
        if name not in present:
            columns.append(pa.nulls(table.num_rows, GOLD_COST_DAILY.schema.field(name).type))
            continue
        wanted, column = GOLD_COST_DAILY.schema.field(name).type, table[name]
        keep = pa.types.is_dictionary(column.type) and column.type.value_type == wanted
        columns.append(column if keep else column.cast(wanted))
    return pa.table(columns, names=_GOLD_USED)


def _prepare_month(lake: Lake, month: str, version: int) -> _PreparedMonth:
    """Pure Arrow/numpy work (no database): runs in a helper thread while the previous month COPYs."""
    gold = _read_gold_month(lake, month, version)
    # Date order makes the BRIN index on charge_date tight.
    days = gold["charge_date"].combine_chunks().cast(pa.int32()).to_numpy(zero_copy_only=False)
    if len(days) and not np.all(days[1:] >= days[:-1]):
        gold = gold.take(pc.sort_indices(gold["charge_date"]))
    codes = _Codes(gold)
    return _PreparedMonth(month, gold, {dim.name: _gold_members(codes, dim) for dim in DIMENSIONS})


def _read_optional(lake: Lake, table: str, months: Sequence[str] | None = None) -> pa.Table | None:
    if not lake.exists(table):
        return None
    filters = [("charge_month", "in", list(months))] if months is not None else None
    return lake.read_arrow(table, filters=filters)


def _fact_table(gold: pa.Table, keys: dict[str, pa.ChunkedArray], load_id: int) -> pa.Table:
    columns: dict[str, Any] = {"charge_date": gold["charge_date"]}
    for dim in DIMENSIONS:
        columns[dim.key] = keys[dim.key]
    for measure in (*FACT_MEASURES, "row_count"):
        columns[measure] = gold[measure]
    columns["load_id"] = pa.array(np.full(gold.num_rows, load_id, dtype=np.int64))
    fact = pa.table(columns)
    assert tuple(fact.column_names) == FACT_COLUMNS
    return fact


def _stage_name(month: str, load_id: int) -> str:
    return f"{STAGE_SCHEMA}.{_partition_name(month)}_load{int(load_id)}"


def _stage_month(engine: sa.Engine, month: str, fact: pa.Table, load_id: int) -> tuple[pa.Table, pa.Table]:
    """On its own connection: COPY the month into a fresh staging table (created in the same transaction,
    so COPY FREEZE applies and no index is maintained row by row), index and analyze it, commit.

    The staging table is outside the mart's visible state until the main transaction swaps it in; if
    that transaction fails or dies, the table is dropped (then, or by the next load). Returns the month's
    agg_cost_daily and agg_cost_resource_monthly rows, computed here so that work also overlaps other
    months' COPY."""
    name = _stage_name(month, load_id)
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        try:
            with dbapi.cursor() as cur:
                cur.execute(f"CREATE TABLE {name} (LIKE mart.fact_cost_daily INCLUDING DEFAULTS)")
                _copy_arrow(cur, fact, name, freeze=True)
                # Same definition as the parent's one index (BRIN), so ATTACH adopts it instead of building one.
                cur.execute(f"CREATE INDEX ON {name} USING brin (charge_date)")
                # Statistics for what queries filter, join and group on; histograms of the numeric
                # measures cost most of an ANALYZE and no plan depends on them.
                cur.execute(f"ANALYZE {name} ({', '.join(_ANALYZED)})")
            dbapi.commit()
        except Exception:
            dbapi.rollback()
            raise
    finally:
        raw.close()
    return _daily_aggregate(fact), _resource_aggregate(fact, month)


_ANALYZED = ("charge_date", *(dim.key for dim in DIMENSIONS))


def _replace_days(cur, month: str, days: Sequence[dt.date], fact: pa.Table) -> int:
    """Replace the days' rows of the month's partition with `fact` (those days' rows) inside the load's
    transaction; returns the rows replaced. Readers keep reading the partition meanwhile (a row lock,
    not the swap's table lock) and see the new days at commit."""
    name = _partition_name(month)
    cur.execute(f"DELETE FROM mart.{name} WHERE charge_date = ANY(%s)", (list(days),))
    replaced = cur.rowcount
    _copy_arrow(cur, fact, f"mart.{name}")
    return replaced


def _drop_stages(cur, *, load_id: int | None = None) -> None:
    """Drop staging tables: this load's (after a failure), or every one (left by dead loads; the caller
    holds the load lock, so no live load owns any)."""
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (STAGE_SCHEMA,))
    suffix = f"_load{int(load_id)}" if load_id is not None else ""
    for (table,) in cur.fetchall():
        if table.endswith(suffix):
            cur.execute(f'DROP TABLE {STAGE_SCHEMA}."{table}"')


def _swap_month(cur, month: str, load_id: int) -> int:
    """Replace the month's partition with its staged table; returns the rows replaced.

    DETACH takes an ACCESS EXCLUSIVE lock on the fact table until commit, so this is the last step
    before COMMIT; readers wait at most the few milliseconds the swap takes (and a long reader delays
    the swap by at most the reader's statement_timeout).
    """
    name = _partition_name(month)
    start, end = _month_bounds(month)
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"mart.{name}",))
    replaced = 0
    if cur.fetchone()[0]:
        cur.execute(f"SELECT count(*) FROM mart.{name}")
        replaced = cur.fetchone()[0]
        cur.execute(f"ALTER TABLE mart.fact_cost_daily DETACH PARTITION mart.{name}")
        cur.execute(f"DROP TABLE mart.{name}")
    stage = _stage_name(month, load_id)
    cur.execute(f"ALTER TABLE {stage} SET SCHEMA mart")
    cur.execute(f"ALTER TABLE mart.{stage.split('.', 1)[1]} RENAME TO {name}")
    cur.execute(
        f"ALTER TABLE mart.fact_cost_daily ATTACH PARTITION mart.{name} FOR VALUES FROM (%s) TO (%s)",
        (start, end),
    )
    return replaced


# Actual and amortized cost are null where their report has not arrived ("not available"): a sum over
# rows where one is missing is not a total, so it stays null (list cost and quantity are optional extras).
_COMPLETE = pc.ScalarAggregateOptions(skip_nulls=False)
# Converted costs likewise: null where a row has no rate (or lacks the metric), so a sum never hides one.
_AGG_SUMS = [
    ("actual_cost", "sum", _COMPLETE),
    ("amortized_cost", "sum", _COMPLETE),
    ("list_cost", "sum"),
    ("quantity", "sum"),
    ([], "count_all"),
    ("actual_cost_converted", "sum", _COMPLETE),
    ("amortized_cost_converted", "sum", _COMPLETE),
    # Contracted cost likewise (a total over rows some of which lack it is no total); commitment used and
    # unused cost are 0 on uncovered rows of a source that carries them, null only where none does.
    ("contracted_cost", "sum", _COMPLETE),
    ("commitment_used_cost", "sum"),
    ("commitment_unused_cost", "sum"),
]
_AGG_MEASURES = [
    "actual_cost",
    "amortized_cost",
    "list_cost",
    "quantity",
    "fact_rows",
    "actual_cost_converted",
    "amortized_cost_converted",
    "contracted_cost",
    "commitment_used_cost",
    "commitment_unused_cost",
]


def _daily_aggregate(fact: pa.Table) -> pa.Table:
    """agg_cost_daily rows for `fact`: summed in Arrow (multi-threaded, exact decimal sums) rather than by a
    single-core Postgres GROUP BY over millions of numeric rows; only the small result is COPYed."""
    grouped = fact.group_by(["charge_date", *AGG_KEYS], use_threads=True).aggregate(_AGG_SUMS)
    grouped = grouped.rename_columns(["charge_date", *AGG_KEYS, *_AGG_MEASURES])
    # In index order: the COPY then appends to the date index instead of inserting all over it.
    return grouped.sort_by([("charge_date", "ascending"), ("subscription_key", "ascending")])


def _resource_aggregate(fact: pa.Table, month: str) -> pa.Table:
    """agg_cost_resource_monthly rows for one month of `fact`: every dimension key kept (resource and meter
    included), summed over the month in Arrow like `_daily_aggregate`."""
    keys = [dim.key for dim in DIMENSIONS]
    grouped = fact.group_by(keys, use_threads=True).aggregate(_AGG_SUMS)
    grouped = grouped.rename_columns([*keys, *_AGG_MEASURES])
    start = _month_bounds(month)[0]
    grouped = grouped.add_column(0, "charge_month", pa.array([start] * grouped.num_rows, pa.date32()))
    # In the order of the (charge_month, resource_key) index, so the COPY appends to it.
    return grouped.sort_by([("resource_key", "ascending")])


def _rebuild_monthly(cur, months: Sequence[str]) -> None:
    """agg_cost_monthly for the months, from agg_cost_daily (already replaced in this transaction)."""
    keys = ", ".join(AGG_KEYS)
    complete = [
        f"CASE WHEN count(*) = count({c}) THEN sum({c}) END"
        for c in (
            "actual_cost",
            "amortized_cost",
            "actual_cost_converted",
            "amortized_cost_converted",
            "contracted_cost",
        )
    ]
    sums = (
        f"{complete[0]}, {complete[1]}, sum(list_cost), sum(quantity), {complete[2]}, {complete[3]}, "
        f"{complete[4]}, sum(commitment_used_cost), sum(commitment_unused_cost)"
    )
    for month in months:
        start, end = _month_bounds(month)
        cur.execute("DELETE FROM mart.agg_cost_monthly WHERE charge_month = %s", (start,))
        cur.execute(
            f"""INSERT INTO mart.agg_cost_monthly (charge_month, {keys}, actual_cost, amortized_cost, list_cost,
                    quantity, actual_cost_converted, amortized_cost_converted, contracted_cost,
                    commitment_used_cost, commitment_unused_cost, fact_rows)
                SELECT %s, {keys}, {sums}, sum(fact_rows)
                FROM mart.agg_cost_daily WHERE charge_date >= %s AND charge_date < %s GROUP BY {keys}""",
            (start, start, end),
        )


def _analyze_aggregates(cur) -> None:
    """Fresh statistics for the aggregates: worth it after whole months change, not after a few days
    (autovacuum's analyze catches up with those, and no plan changes with them)."""
    keys = ", ".join(AGG_KEYS)
    # Key and date columns only, as for the fact partitions (no plan depends on the sums' histograms).
    cur.execute(f"ANALYZE mart.agg_cost_daily (charge_date, {keys})")
    cur.execute(f"ANALYZE mart.agg_cost_monthly (charge_month, {keys})")
    cur.execute(f"ANALYZE mart.agg_cost_resource_monthly (charge_month, {', '.join(_ANALYZED[1:])})")


def _load_tags(
    cur,
    lake: Lake,
    by_tag: pa.Table | None,
    months: Sequence[str],
    stats: LoadStats,
) -> None:
    if by_tag is not None:
        for month in months:
            start, end = _month_bounds(month)
            cur.execute("DELETE FROM mart.agg_cost_by_tag WHERE charge_date >= %s AND charge_date < %s", (start, end))
        if by_tag.num_rows:
            key_maps = {
                name: _upsert_dimension(
                    cur, _dim(name), _distinct_members(by_tag, _dim(name), []), update_attributes=False
                )[0]
                for name in ("subscription", "currency")
            }
            rows = pa.table(
                {
                    "charge_date": by_tag["charge_date"],
                    "subscription_key": _lookup_keys(by_tag, _dim("subscription"), key_maps["subscription"]),
                    "tag_key": pc.fill_null(by_tag["tag_key"], ""),
                    "tag_value": pc.fill_null(by_tag["tag_value"], ""),
                    "currency_key": _lookup_keys(by_tag, _dim("currency"), key_maps["currency"]),
                    "actual_cost": by_tag["actual_cost"],
                    "amortized_cost": by_tag["amortized_cost"],
                }
            )
            _copy_arrow(cur, rows, "mart.agg_cost_by_tag")
            stats.tag_rows = rows.num_rows
        cur.execute("ANALYZE mart.agg_cost_by_tag")

    tags = _read_optional(lake, GOLD_RESOURCE_TAGS.name)
    if tags is None:
        return
    # The bridge is gold's current resource -> tag mapping, replaced whole (it is small).
    cur.execute(
        "CREATE TEMP TABLE stage_resource_tags (resource_id text, tag_key text, tag_value text, "
        "first_seen date, last_seen date) ON COMMIT DROP"
    )
    _copy_arrow(
        cur, tags.select(["resource_id", "tag_key", "tag_value", "first_seen", "last_seen"]), "stage_resource_tags"
    )
    # Resources that carry tags but had no cost in the loaded months still need a stable key.
    cur.execute(
        "INSERT INTO mart.dim_resource (resource_id) SELECT DISTINCT coalesce(resource_id, '') FROM stage_resource_tags "
        "ORDER BY 1 ON CONFLICT (resource_id) DO NOTHING"
    )
    cur.execute(
        "INSERT INTO mart.dim_tag (tag_key, tag_value) SELECT DISTINCT coalesce(tag_key, ''), coalesce(tag_value, '') "
        "FROM stage_resource_tags ORDER BY 1, 2 ON CONFLICT (tag_key, tag_value) DO NOTHING"
    )
    cur.execute("DELETE FROM mart.bridge_resource_tag")
    cur.execute(
        """INSERT INTO mart.bridge_resource_tag (resource_key, tag_id, first_seen, last_seen)
           SELECT r.resource_key, t.tag_id, min(s.first_seen), max(s.last_seen)
           FROM stage_resource_tags s
           JOIN mart.dim_resource r ON r.resource_id = coalesce(s.resource_id, '')
           JOIN mart.dim_tag t ON t.tag_key = coalesce(s.tag_key, '') AND t.tag_value = coalesce(s.tag_value, '')
           GROUP BY r.resource_key, t.tag_id"""
    )


def _load_cost_changes(cur, lake: Lake, months: Sequence[str], load_id: int) -> None:
    """Replace the months' rows of mart.resource_cost_changes with gold's (started/stopped resources)."""
    changes = _read_optional(lake, GOLD_COST_CHANGES.name, months)
    if changes is None:
        return  # a gold written before the table existed: the mart keeps what it has
    for month in months:
        cur.execute("DELETE FROM mart.resource_cost_changes WHERE charge_month = %s", (_month_bounds(month)[0],))
    if not changes.num_rows:
        return
    month_start = pc.strptime(pc.binary_join_element_wise(changes["charge_month"], "-01", ""), "%Y-%m-%d", "s")
    rows = pa.table(
        {
            "charge_month": month_start.cast(pa.date32()),
            "event_date": changes["event_date"],
            "event": changes["event"],
            **{
                col: pc.fill_null(changes[src].cast(pa.string()), "")
                for col, src in (
                    ("resource_id", "resource_id"),
                    ("subscription_id", "subscription_id"),
                    ("resource_group", "resource_group"),
                    ("service_name", "service_name"),
                    ("currency_code", "billing_currency"),
                )
            },
            "daily_cost": changes["daily_cost"],
            "load_id": pa.array(np.full(changes.num_rows, load_id, dtype=np.int64)),
        }
    )
    _copy_arrow(cur, rows, "mart.resource_cost_changes")


def load_fx_rates(
    engine: sa.Engine, rates: Sequence[Any], *, reporting_currency: str | None, run_id: str | None
) -> int:
    """Replace mart.fx_rates with `rates` (backend.sources.fx.Rate) and record the reporting currency, in one
    transaction; the pages read them to say what a converted figure is and which rate dates it used."""
    rows = [
        {
            "m": dt.date.fromisoformat(f"{r.rate_month}-01"),
            "f": r.from_currency,
            "t": r.to_currency,
            "r": r.rate,
            "d": r.rate_date,
            "run": run_id,
        }
        for r in rates
    ]
    with engine.begin() as conn:
        # Small (a few rows per month): replaced whole, so a rate removed upstream never lingers here.
        conn.execute(sa.text("DELETE FROM mart.fx_rates"))
        if rows:
            conn.execute(
                sa.text(
                    "INSERT INTO mart.fx_rates (rate_month, from_currency, to_currency, rate, rate_date, run_id) "
                    "VALUES (:m, :f, :t, :r, :d, :run)"
                ),
                rows,
            )
        conn.execute(sa.text("DELETE FROM mart.fx_reporting_currency"))
        if reporting_currency:
            conn.execute(
                sa.text("INSERT INTO mart.fx_reporting_currency (currency, run_id) VALUES (:c, :run)"),
                {"c": reporting_currency, "run": run_id},
            )
    return len(rows)


def mark_abandoned_loads(engine: sa.Engine) -> int:
    """Loads still 'running' whose backend is gone (killed process, lost connection) become 'failed'.
    Their data transaction never committed, so nothing else needs undoing. Returns how many were marked."""
    with engine.begin() as conn:
        marked = conn.execute(
            sa.text(
                """UPDATE mart.load_history h SET status = 'failed', finished_at = now(),
                       error = 'abandoned: its database session ended before commit (process killed?)'
                   WHERE h.status = 'running' AND NOT EXISTS (
                       SELECT 1 FROM pg_stat_activity a
                       WHERE a.pid = h.backend_pid AND a.backend_start <= h.started_at)"""
            )
        ).rowcount
    if marked:
        log.warning("marked %d abandoned mart load(s) as failed", marked)
    return marked


def _record_failure(dbapi, load_id: int, exc: Exception, seconds: float) -> None:
    """Roll back and mark the load failed; if the connection itself is gone (killed backend), say so and let
    the original error propagate: the row stays 'running' with its dead backend's pid."""
    try:
        dbapi.rollback()
        with dbapi.cursor() as cur:
            _drop_stages(cur, load_id=load_id)
            cur.execute(
                "UPDATE mart.load_history SET status = 'failed', finished_at = now(), error = %s, "
                "duration_ms = %s WHERE load_id = %s",
                (f"{type(exc).__name__}: {exc}", int(seconds * 1000), load_id),
            )
        dbapi.commit()
    except Exception:
        log.exception("could not record the failure of mart load %s", load_id)


def _dim(name: str) -> Dimension:
    return next(d for d in DIMENSIONS if d.name == name)


def load_gold(
    target: Settings | sa.Engine | str,
    lake: Lake,
    *,
    run_id: str | None,
    months: Sequence[str] | None = None,
    days: dict[str, Sequence[str]] | None = None,
    copy_workers: int = COPY_WORKERS,
) -> LoadStats:
    """Load gold cost_daily (and the tag tables) into the mart for `months` ("YYYY-MM"; None = every
    month gold holds), atomically. Re-running with the same gold changes nothing (same keys, same rows).

    `days` (month -> ISO charge days) says gold changed only those days of a month since the mart last
    loaded it (backend.pipeline.steps.mart knows); a month the mart holds then has just those days'
    rows replaced, instead of all its rows copied and swapped in. A month the mart lacks loads whole.

    `target` is the owner role: Settings with database_url, an Engine, or a URL. `copy_workers` months
    are COPYed at once on separate connections (staging tables), then swapped in by the one transaction.
    """
    t0 = time.perf_counter()
    engine, owned = _engine(target)
    phases: dict[str, float] = {}
    try:
        tick = time.perf_counter()
        months, version = _gold_months(lake, months)
        by_day = _load_days(months, days)
        tag_costs = _read_optional(lake, GOLD_COST_BY_TAG.name, months) if months else None
        versions = {
            t: lake.version(t)
            for t in (GOLD_COST_DAILY.name, GOLD_COST_BY_TAG.name, GOLD_RESOURCE_TAGS.name, GOLD_MONTHLY_SUMMARY.name)
        }
        phases["read_gold"] = time.perf_counter() - tick

        mark_abandoned_loads(engine)
        raw = engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            dbapi.autocommit = True
            with dbapi.cursor() as cur:
                # Recorded outside the data transaction so a killed load remains visible as 'running'.
                cur.execute(
                    "INSERT INTO mart.load_history (run_id, status, months, gold_versions, backend_pid) "
                    "VALUES (%s, 'running', %s, %s, pg_backend_pid()) RETURNING load_id",
                    (run_id, list(months), json.dumps(versions)),
                )
                load_id = cur.fetchone()[0]
                # Loader infrastructure, not data model: staging tables never outlive a load.
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGE_SCHEMA}")
            stats = LoadStats(load_id=load_id, months=list(months), gold_versions=versions)
            log.info("mart load %s: months %s of gold version %s (run %s)", load_id, months, version, run_id)
            dbapi.autocommit = False
            try:
                with dbapi.cursor() as cur:
                    _load_in_transaction(
                        cur,
                        engine,
                        lake,
                        version,
                        tag_costs,
                        months,
                        by_day,
                        stats,
                        phases,
                        copy_workers=copy_workers,
                    )
                    stats.seconds = time.perf_counter() - t0
                    cur.execute(
                        "UPDATE mart.load_history SET status = 'succeeded', finished_at = now(), rows_in = %s, "
                        "rows_loaded = %s, rows_replaced = %s, dims_added = %s, duration_ms = %s WHERE load_id = %s",
                        (
                            stats.rows_in,
                            stats.rows_loaded,
                            stats.rows_replaced,
                            json.dumps(stats.dims_added),
                            int(stats.seconds * 1000),
                            load_id,
                        ),
                    )
                tick = time.perf_counter()
                dbapi.commit()
                phases["commit"] = time.perf_counter() - tick
            except Exception as exc:
                log.exception("mart load %s failed; previous mart state kept", load_id)
                _record_failure(dbapi, load_id, exc, time.perf_counter() - t0)
                raise
        finally:
            raw.close()
    finally:
        if owned:
            engine.dispose()
    stats.seconds = time.perf_counter() - t0
    stats.phase_seconds = {k: round(v, 3) for k, v in phases.items()}
    log.info(
        "mart load %s: %d rows in %.1fs (replaced %d, new members %s)",
        stats.load_id,
        stats.rows_loaded,
        stats.seconds,
        stats.rows_replaced,
        stats.dims_added,
    )
    return stats


def _load_in_transaction(
    cur,
    engine: sa.Engine,
    lake: Lake,
    version: int,
    tag_costs: pa.Table | None,
    months: list[str],
    days: dict[str, list[dt.date]],
    stats: LoadStats,
    phases: dict[str, float],
    *,
    copy_workers: int,
) -> None:
    """Month by month, three things overlap: a helper thread reads and encodes month N+1 from gold, this
    transaction upserts month N's dimension members and aggregates, and `copy_workers` connections COPY
    months into staging tables. The swap at the end is the only step that changes what readers see.

    A month in `days` that the mart already holds is replaced in place instead: this transaction
    deletes and COPYs only those days' fact and daily-aggregate rows (small), no staging, no swap."""

    def add(phase: str, since: float) -> None:
        phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - since

    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOAD_LOCK,))
    _drop_stages(cur)
    in_place = {}
    for month, dates in days.items():
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"mart.{_partition_name(month)}",))
        if cur.fetchone()[0]:
            in_place[month] = dates
    stats.days = {month: [d.isoformat() for d in dates] for month, dates in in_place.items()}
    for month in months:
        start, end = _month_bounds(month)
        if month in in_place:
            cur.execute("DELETE FROM mart.agg_cost_daily WHERE charge_date = ANY(%s)", (in_place[month],))
        else:
            cur.execute("DELETE FROM mart.agg_cost_daily WHERE charge_date >= %s AND charge_date < %s", (start, end))
        cur.execute("DELETE FROM mart.agg_cost_resource_monthly WHERE charge_month = %s", (start,))
    stats.dims_added = {dim.name: 0 for dim in DIMENSIONS}
    known = _KnownMembers()
    workers = max(1, copy_workers)
    copying: list = []  # months submitted whose aggregates this transaction has not COPYed yet

    def take_aggregates(future) -> None:
        tick = time.perf_counter()
        daily, by_resource = future.result()  # the first COPY error fails the load
        add("wait_for_copy", tick)
        tick = time.perf_counter()
        # Summed in Arrow (exact decimals) by the worker; only the small results are COPYed here.
        _copy_arrow(cur, daily, "mart.agg_cost_daily")
        _copy_arrow(cur, by_resource, "mart.agg_cost_resource_monthly")
        add("aggregates", tick)

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="mart-prepare") as prepare_pool,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mart-copy") as copy_pool,
    ):
        pending = prepare_pool.submit(_prepare_month, lake, months[0], version) if months else None
        for i, month in enumerate(months):
            tick = time.perf_counter()
            prepared = pending.result()
            add("wait_for_gold", tick)
            if i + 1 < len(months):
                pending = prepare_pool.submit(_prepare_month, lake, months[i + 1], version)

            tick = time.perf_counter()
            keys: dict[str, pa.Array] = {}
            for dim in DIMENSIONS:
                members, row_member = prepared.members[dim.name]
                member_keys, added = known.keys(cur, dim, members)
                stats.dims_added[dim.name] += added
                keys[dim.key] = pa.array(member_keys[row_member], pa.int32())
            fact = _fact_table(prepared.gold, keys, stats.load_id)
            add("dimensions", tick)
            stats.rows_in += prepared.gold.num_rows
            if month in in_place:
                tick = time.perf_counter()
                dates = pa.array(in_place[month], pa.date32())
                changed = fact.filter(pc.is_in(fact["charge_date"], value_set=dates))
                stats.rows_replaced += _replace_days(cur, month, in_place[month], changed)
                _copy_arrow(cur, _daily_aggregate(changed), "mart.agg_cost_daily")
                _copy_arrow(cur, _resource_aggregate(fact, month), "mart.agg_cost_resource_monthly")
                stats.rows_loaded += changed.num_rows
                add("in_place", tick)
                continue

            # Bounded: never more months in flight than workers, so memory stays at a few months. A
            # finished month's aggregates go in right away, while the other months still copy.
            while len(copying) >= workers:
                tick = time.perf_counter()
                done, _ = wait(copying, return_when=FIRST_COMPLETED)
                add("wait_for_copy", tick)
                for future in done:
                    copying.remove(future)
                    take_aggregates(future)
            copying.append(copy_pool.submit(_stage_month, engine, month, fact, stats.load_id))
            stats.rows_loaded += fact.num_rows
        # Tags need no fact rows: loaded while the last months are still copying.
        tick = time.perf_counter()
        _load_tags(cur, lake, tag_costs, months, stats)
        _load_cost_changes(cur, lake, months, stats.load_id)
        add("tags", tick)
        for future in copying:
            take_aggregates(future)

    tick = time.perf_counter()
    _rebuild_monthly(cur, months)
    if len(in_place) < len(months):
        _analyze_aggregates(cur)
    add("aggregates", tick)
    tick = time.perf_counter()
    for month in months:
        if month not in in_place:
            stats.rows_replaced += _swap_month(cur, month, stats.load_id)
    add("swap", tick)
