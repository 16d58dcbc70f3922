"""Whether an imported file re-delivers cost data silver holds (replace its days) or adds to it (a part file).

Azure writes a large export as several part files, and re-delivers month-to-date every day. With a
manifest the delivery is explicit (its run id: every part is one delivery, a later run replaces it). A
file dropped without one is compared with the files already imported for the same dataset (format and
metric) on the days both cover: a re-delivery repeats their rows (the same resources, meters and
dimensions, costs possibly re-rated), a sibling part holds other rows. So each row gets a fingerprint of
its non-measure columns, a consistent sample of them is kept with the import, and a file whose sampled
rows on shared days are mostly already known replaces those days; otherwise it adds to them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from operator import itemgetter

import numpy as np
import pandas as pd
import pyarrow as pa

from backend.sources.cursors import ImportedFile

log = logging.getLogger(__name__)

REPLACE, ADD = "replace", "add"
# Column names with these words hold amounts, which a re-rating changes: they are not part of a row's
# identity. Everything else (ids, dimensions, dates, tags) is.
MEASURE_WORDS = ("cost", "price", "quantity", "amount", "exchangerate")
# At most this many fingerprints are kept per file (a power-of-two modulus thins them consistently).
SAMPLE_SIZE = 4096
# A file whose sampled rows on shared days are at least this share known rows re-delivers them.
REDELIVERY_SHARE = 0.5


def is_measure(column: str) -> bool:
    name = column.strip().lower().replace("_", "")
    return any(word in name for word in MEASURE_WORDS)


def identity_columns(header: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(header) if not is_measure(name)]


def csv_fingerprints(rows: list[list[str]], header: Sequence[str]) -> np.ndarray:
    """One 32-bit fingerprint per parsed CSV row (of its identity fields as written: one exporter writes them alike)."""
    keep = identity_columns(header)
    width = len(header)
    pick = itemgetter(*keep) if len(keep) > 1 else (lambda row: (row[keep[0]],)) if keep else (lambda row: ())
    out = np.zeros(len(rows), dtype=np.uint32)
    for r, row in enumerate(rows):
        if len(row) < width:
            row = row + [""] * (width - len(row))
        out[r] = zlib.crc32("\x1f".join(pick(row)).encode("utf-8", "surrogatepass"))
    return out


def table_fingerprints(table: pa.Table) -> np.ndarray:
    """One 32-bit fingerprint per row of a (Parquet) table, of its identity columns as text."""
    names = [n for n in table.column_names if not is_measure(n)]
    if not names or not table.num_rows:
        return np.zeros(table.num_rows, dtype=np.uint32)
    frame = pd.DataFrame({n: table[n].cast(pa.string()).to_pandas() for n in names if _castable(table[n].type)})
    if frame.empty:
        return np.zeros(table.num_rows, dtype=np.uint32)
    return (pd.util.hash_pandas_object(frame, index=False).to_numpy() & 0xFFFFFFFF).astype(np.uint32)


def _castable(kind: pa.DataType) -> bool:
    return not pa.types.is_nested(kind) and not pa.types.is_binary(kind)


def slice_name(scope: str, day: date | None) -> str:
    return f"{scope}|{day.isoformat() if day else ''}"


def sample(
    groups: dict[tuple[str, date | None], list[int]], fingerprints: np.ndarray
) -> tuple[int, dict[str, list[int]]]:
    """(modulus, fingerprints per slice kept when fingerprint % modulus == 0): at most about SAMPLE_SIZE."""
    modulus = 1
    while len(fingerprints) / modulus > SAMPLE_SIZE:
        modulus *= 2
    kept: dict[str, list[int]] = {}
    for (scope, day), members in groups.items():
        values = fingerprints[np.asarray(members, dtype=np.int64)]
        if modulus > 1:
            values = values[values % modulus == 0]
        if len(values):
            kept[slice_name(scope, day)] = sorted({int(v) for v in values})
    return modulus, kept


@dataclass(frozen=True)
class Decision:
    mode: str  # REPLACE or ADD
    detail: str  # why, for the load report
    delivery_id: str = ""  # the delivery this file belongs to


def decide(
    fingerprints: dict[str, list[int]], modulus: int, earlier: Iterable[ImportedFile], *, own_id: str
) -> Decision:
    """Replace or add, against every earlier import of the same dataset together (oldest first).

    Together, so a whole file re-delivered after its three parts is known as a re-delivery (each part alone
    holds a third of its rows), and a third part after two is known as new rows.
    """
    overlapping = [f for f in earlier if any(s in (f.fingerprints or {}) for s in fingerprints)]
    if not overlapping:
        return Decision(REPLACE, "no earlier file of this dataset covers its days", own_id)
    step = max([modulus, *(f.modulus for f in overlapping)])
    shared = {s for f in overlapping for s in (f.fingerprints or {}) if s in fingerprints}
    mine = {v for s in shared for v in fingerprints[s] if v % step == 0}
    known = {v for f in overlapping for s in shared for v in (f.fingerprints or {}).get(s, ()) if v % step == 0}
    names = sorted({f.name for f in overlapping})
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    if not mine:
        # Too few sampled rows on the shared days to tell: a re-delivery is the common case (month to date).
        return Decision(REPLACE, f"covers days of {shown}; too few rows to compare: replaces those days", own_id)
    share = len(mine & known) / len(mine)
    if share >= REDELIVERY_SHARE:
        return Decision(
            REPLACE,
            f"re-delivers {shown} ({share:.0%} of its sampled rows on {len(shared)} shared day(s) are already "
            "loaded): replaces those days",
            own_id,
        )
    return Decision(
        ADD, f"adds rows to days {shown} delivered ({share:.0%} already loaded: a part of the same export)", own_id
    )
