"""Source cursors: which (source, scope, metric, day) bronze holds, staged per batch and advanced only on commit (the Postgres store is backend.mart.cursors)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CursorRow:
    """One delivered day of one scope (subscription, billing account, file) and metric, in one billing
    currency: a day billed in two currencies is two rows, so each currency's reported total reconciles with
    silver's total of that currency (ops.source_cursors is keyed by currency since migration 0020)."""

    source: str
    scope: str
    metric: str
    day: date
    fetched_at: datetime
    row_count: int | None = None
    reported_total: Decimal | None = None  # what the source said the day cost, for reconciliation
    currency: str | None = None
    # A part file adding rows to a day another file delivered: its rows and total add to the stored ones
    # (a re-delivery replaces them).
    adds: bool = False

    def to_json(self) -> dict[str, str | int | bool | None]:
        return {
            "adds": self.adds,
            "source": self.source,
            "scope": self.scope,
            "metric": self.metric,
            "day": self.day.isoformat(),
            "fetched_at": self.fetched_at.isoformat(),
            "row_count": self.row_count,
            "reported_total": None if self.reported_total is None else str(self.reported_total),
            "currency": self.currency,
        }

    @classmethod
    def from_json(cls, doc: dict) -> CursorRow:
        total = doc.get("reported_total")
        return cls(
            source=doc["source"],
            scope=doc["scope"],
            metric=doc["metric"],
            day=date.fromisoformat(doc["day"]),
            fetched_at=datetime.fromisoformat(doc["fetched_at"]),
            row_count=doc.get("row_count"),
            reported_total=None if total is None else Decimal(total),
            currency=doc.get("currency"),
            adds=bool(doc.get("adds")),
        )

    def added_to(self, stored: CursorRow | None) -> CursorRow:
        """This row as committed over `stored`: summed onto it when it adds, else replacing it."""
        if not self.adds or stored is None:
            return self
        total = None if self.reported_total is None else (stored.reported_total or Decimal(0)) + self.reported_total
        rows = None if self.row_count is None else (stored.row_count or 0) + self.row_count
        return CursorRow(
            self.source,
            self.scope,
            self.metric,
            self.day,
            self.fetched_at,
            rows,
            total,
            self.currency or stored.currency,
        )


@dataclass(frozen=True)
class ImportedFile:
    """A file whose rows bronze holds, known by the sha256 of its content (so a renamed copy is the same file)."""

    name: str
    sha256: str
    rows: int
    total: Decimal | None
    batch_id: str = ""
    imported_at: datetime | None = None
    # What decides whether a later file re-delivers this one or adds to it (backend/sources/delivery.py):
    # the dataset (format, metric), the delivery it belongs to, and a sample of its rows' fingerprints per
    # "<scope>|<day>" slice, kept when fingerprint % modulus == 0.
    dataset: str = ""
    delivery_id: str = ""
    modulus: int = 1
    fingerprints: dict[str, list[int]] | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "rows": self.rows,
            "total": None if self.total is None else str(self.total),
            "dataset": self.dataset,
            "delivery_id": self.delivery_id,
            "modulus": self.modulus,
            "fingerprints": self.fingerprints or {},
        }

    @classmethod
    def from_json(cls, doc: dict, *, batch_id: str = "", imported_at: datetime | None = None) -> ImportedFile:
        total = doc.get("total")
        return cls(
            name=doc["name"],
            sha256=doc["sha256"],
            rows=int(doc.get("rows") or 0),
            total=None if total is None else Decimal(total),
            batch_id=batch_id,
            imported_at=imported_at,
            dataset=doc.get("dataset") or "",
            delivery_id=doc.get("delivery_id") or "",
            modulus=int(doc.get("modulus") or 1),
            fingerprints=doc.get("fingerprints") or {},
        )


class UnknownBatchError(KeyError):
    """`commit` was called for a batch that was never fully fetched (or belongs to another source)."""


class CursorStore(Protocol):
    """Where sources keep their cursors. `stage` after a complete fetch; `commit` once bronze holds the batch."""

    def delivered(self, source: str) -> set[tuple[str, str, date]]:
        """(scope, metric, day) already in bronze for `source`."""
        ...

    def stage(
        self,
        batch_id: str,
        source: str,
        rows: Iterable[CursorRow],
        *,
        chunk_count: int,
        files: Iterable[ImportedFile] = (),
    ) -> None: ...

    def commit(self, batch_id: str) -> int:
        """Advance the cursor by the batch's rows (and record its files); returns how many rows moved. Idempotent."""
        ...

    def imported_file(self, sha256: str) -> ImportedFile | None:
        """The first committed import of a file with this content, if any."""
        ...

    def imported_files(self, dataset: str) -> list[ImportedFile]:
        """Every committed import of a dataset (format and metric), oldest first."""
        ...

    def delivered_scopes(self, source: str) -> set[str]:
        """Scopes (subscriptions, accounts) of which bronze holds at least one committed batch of `source`."""
        ...


class MemoryCursorStore:
    """Cursors in memory: for tests, benchmarks and one-shot imports that keep no state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple[str, str, str, date, str], CursorRow] = {}
        self._staged: dict[str, tuple[list[CursorRow], list[ImportedFile]]] = {}
        self._committed: set[str] = set()
        self._files: dict[str, ImportedFile] = {}

    def delivered(self, source: str) -> set[tuple[str, str, date]]:
        with self._lock:
            return {(s, m, d) for (src, s, m, d, _cur) in self._done if src == source}

    def rows(self, source: str) -> list[CursorRow]:
        with self._lock:
            return [row for key, row in sorted(self._done.items()) if key[0] == source]

    def stage(
        self,
        batch_id: str,
        source: str,
        rows: Iterable[CursorRow],
        *,
        chunk_count: int,
        files: Iterable[ImportedFile] = (),
    ) -> None:
        with self._lock:
            self._staged[batch_id] = (list(rows), list(files))

    def commit(self, batch_id: str) -> int:
        with self._lock:
            if batch_id in self._committed:
                return 0
            if batch_id not in self._staged:
                raise UnknownBatchError(f"batch {batch_id!r} was not fetched to the end; nothing to commit")
            rows, files = self._staged.pop(batch_id)
            for day_key, currencies in replaced_currencies(rows).items():
                # A re-delivered day replaces the day: a currency it no longer carries goes too.
                for key in [k for k in self._done if k[:4] == day_key and k[4] not in currencies]:
                    del self._done[key]
            for row in rows:
                key = (row.source, row.scope, row.metric, row.day, row.currency or "")
                self._done[key] = row.added_to(self._done.get(key))
            now = utc_now()
            for f in files:
                self._files.setdefault(
                    f.sha256, ImportedFile.from_json(f.to_json(), batch_id=batch_id, imported_at=now)
                )
            self._committed.add(batch_id)
            return len(rows)

    def imported_file(self, sha256: str) -> ImportedFile | None:
        with self._lock:
            return self._files.get(sha256)

    def imported_files(self, dataset: str) -> list[ImportedFile]:
        with self._lock:
            return [f for f in self._files.values() if f.dataset == dataset]

    def delivered_scopes(self, source: str) -> set[str]:
        return {scope for scope, _metric, _day in self.delivered(source)}


def replaced_currencies(rows: Iterable[CursorRow]) -> dict[tuple[str, str, str, date], set[str]]:
    """The days `rows` re-deliver whole (not adding to them), with the currencies the new delivery carries."""
    out: dict[tuple[str, str, str, date], set[str]] = {}
    for r in rows:
        if not r.adds:
            out.setdefault((r.source, r.scope, r.metric, r.day), set()).add(r.currency or "")
    return out


def utc_now() -> datetime:
    return datetime.now(UTC)
