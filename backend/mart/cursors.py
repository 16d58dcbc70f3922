"""Source cursors in Postgres: `ops.source_cursors` and the batches staged in `ops.source_batches` (migration 0001_ops)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import date

import sqlalchemy as sa

from backend.sources.cursors import CursorRow, ImportedFile, UnknownBatchError, replaced_currencies

log = logging.getLogger(__name__)


class PostgresCursorStore:
    """Cursors in `ops.source_cursors`, staged batches in `ops.source_batches` (migration 0001_ops).

    Staged rows live in the batch's `detail` JSON, so a commit works from another process too (the
    ingest worker that saw bronze's write may not be the process that fetched).

    The ingest handshake merges its own keys into `detail` (backend/mart/batches.py), so the staged
    rows are still there at commit. This process also keeps what it staged in memory, as a fallback
    for a `detail` rewritten by an older writer. The pipeline does not depend on a re-fetch to finish
    a killed run: gold and the mart resume from their own progress marks (backend/mart/progress.py)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine  # the process's owner engine: the store borrows it, never disposes it
        self._staged: dict[str, tuple[list[CursorRow], list[ImportedFile]]] = {}
        self._lock = threading.Lock()

    def delivered(self, source: str) -> set[tuple[str, str, date]]:
        with self._engine.connect() as conn:
            result = conn.execute(
                sa.text("SELECT scope, metric, day FROM ops.source_cursors WHERE source = :source"),
                {"source": source},
            )
            return {(scope, metric, day) for scope, metric, day in result}

    def rows(self, source: str) -> list[CursorRow]:
        with self._engine.connect() as conn:
            result = conn.execute(
                sa.text(
                    "SELECT source, scope, metric, day, fetched_at, row_count, reported_total, currency"
                    " FROM ops.source_cursors WHERE source = :source ORDER BY scope, metric, day, currency"
                ),
                {"source": source},
            )
            return [CursorRow(*row[:-1], currency=row[-1] or None) for row in result]

    def stage(
        self,
        batch_id: str,
        source: str,
        rows: Iterable[CursorRow],
        *,
        chunk_count: int,
        files: Iterable[ImportedFile] = (),
    ) -> None:
        rows, files = list(rows), list(files)
        with self._lock:
            self._staged[batch_id] = (rows, files)
        detail = json.dumps({"cursor_rows": [row.to_json() for row in rows], "files": [f.to_json() for f in files]})
        with self._engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO ops.source_batches (batch_id, source, chunk_count, state, detail)"
                    " VALUES (:batch_id, :source, :chunk_count, 'sent', CAST(:detail AS json))"
                    " ON CONFLICT (batch_id) DO UPDATE SET chunk_count = EXCLUDED.chunk_count,"
                    " detail = EXCLUDED.detail, state = 'sent'"
                    " WHERE ops.source_batches.state <> 'committed'"
                ),
                {"batch_id": batch_id, "source": source, "chunk_count": chunk_count, "detail": detail},
            )

    def commit(self, batch_id: str) -> int:
        with self._engine.begin() as conn:
            found = conn.execute(
                sa.text("SELECT state, detail FROM ops.source_batches WHERE batch_id = :b FOR UPDATE"),
                {"b": batch_id},
            ).one_or_none()
            if found is None:
                raise UnknownBatchError(f"batch {batch_id!r} was not fetched to the end; nothing to commit")
            state, detail = found
            if state == "committed":
                return 0
            with self._lock:
                own = self._staged.get(batch_id)
            if detail and "cursor_rows" in detail:
                rows = [CursorRow.from_json(doc) for doc in detail["cursor_rows"]]
                files = [ImportedFile.from_json(doc) for doc in detail.get("files", [])]
            elif own is not None:
                rows, files = own
            else:
                # Harmless but worth seeing: the days are fetched again next run and silver's MERGE absorbs them.
                log.warning("batch %s has no staged cursor rows here; its days will be fetched again", batch_id)
                rows, files = [], []
            scopes = sorted({r.scope for r in (rows or (own[0] if own is not None else []))})
            replaced = replaced_currencies(rows)
            if replaced:
                conn.execute(
                    sa.text(
                        "DELETE FROM ops.source_cursors WHERE source = :source AND scope = :scope"
                        " AND metric = :metric AND day = :day AND currency <> ALL (:currencies)"
                    ),
                    [
                        {"source": src, "scope": scope, "metric": metric, "day": day, "currencies": sorted(cur)}
                        for (src, scope, metric, day), cur in replaced.items()
                    ],
                )
            if rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO ops.source_cursors"
                        " (source, scope, metric, day, batch_id, fetched_at, row_count, reported_total, currency)"
                        " VALUES (:source, :scope, :metric, :day, :batch_id, :fetched_at, :row_count,"
                        " :reported_total, :currency)"
                        " ON CONFLICT (source, scope, metric, day, currency) DO UPDATE SET batch_id = EXCLUDED.batch_id,"
                        " fetched_at = EXCLUDED.fetched_at,"
                        " row_count = CASE WHEN :adds THEN ops.source_cursors.row_count + EXCLUDED.row_count"
                        " ELSE EXCLUDED.row_count END,"
                        " reported_total = CASE WHEN :adds THEN ops.source_cursors.reported_total"
                        " + EXCLUDED.reported_total ELSE EXCLUDED.reported_total END"
                    ),
                    [
                        {
                            "source": r.source,
                            "scope": r.scope,
                            "metric": r.metric,
                            "day": r.day,
                            "batch_id": batch_id,
                            "fetched_at": r.fetched_at,
                            "row_count": r.row_count,
                            "reported_total": r.reported_total,
                            "currency": r.currency or "",
                            "adds": r.adds,
                        }
                        for r in rows
                    ],
                )
            # Recorded with the state change, so "imported" / "delivered" always means "bronze holds it".
            extra = {"imported_files": [f.to_json() for f in files], "scopes": scopes}
            conn.execute(
                sa.text(
                    "UPDATE ops.source_batches SET state = 'committed',"
                    " detail = (COALESCE(detail::jsonb, '{}'::jsonb) || CAST(:extra AS jsonb))::json"
                    " WHERE batch_id = :b"
                ),
                {"b": batch_id, "extra": json.dumps(extra)},
            )
        with self._lock:
            self._staged.pop(batch_id, None)
        log.info("batch %s committed: cursor advanced by %d day(s)", batch_id, len(rows))
        return len(rows)

    def delivered_scopes(self, source: str) -> set[str]:
        with self._engine.connect() as conn:
            result = conn.execute(
                sa.text(
                    "SELECT DISTINCT json_array_elements_text(detail -> 'scopes') FROM ops.source_batches"
                    " WHERE source = :source AND state = 'committed' AND json_typeof(detail -> 'scopes') = 'array'"
                    " UNION SELECT DISTINCT scope FROM ops.source_cursors WHERE source = :source"
                ),
                {"source": source},
            )
            return {scope for (scope,) in result}

    def imported_file(self, sha256: str) -> ImportedFile | None:
        found = self._imported("sha256", sha256, limit=1)
        return found[0] if found else None

    def imported_files(self, dataset: str) -> list[ImportedFile]:
        return self._imported("dataset", dataset)

    def _imported(self, field: str, value: str, *, limit: int | None = None) -> list[ImportedFile]:
        # Committed batches only: a file sent to Kafka but never in bronze was not imported. Oldest first.
        with self._engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT b.batch_id, b.created_at, f.value AS file FROM ops.source_batches b,"
                    " json_array_elements(b.detail -> 'imported_files') f"
                    " WHERE b.state = 'committed' AND json_typeof(b.detail -> 'imported_files') = 'array'"
                    " AND f.value ->> :field = :value ORDER BY b.created_at" + (f" LIMIT {int(limit)}" if limit else "")
                ),
                {"field": field, "value": value},
            ).all()
        return [ImportedFile.from_json(r.file, batch_id=r.batch_id, imported_at=r.created_at) for r in found]
