"""The cursor handshake: fetch into Kafka under a batch id, drain to bronze, and let a source's cursor advance only for batches bronze holds."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date
from typing import Any

import pyarrow.compute as pc
import sqlalchemy as sa

from backend.ingest.producer import BatchReceipt, KafkaChunkSink
from backend.lake import Lake
from backend.lake.catalog import BRONZE_COST_RECORDS
from backend.sources.base import CostSource

log = logging.getLogger(__name__)

# States of ops.source_batches.state, in order. 'failed' marks a fetch that raised part-way: its chunks
# may be in Kafka, but the batch is never complete, so the cursor does not move.
SENT, IN_BRONZE, COMMITTED, FAILED = "sent", "in_bronze", "committed", "failed"


def new_batch_id(run_id: str, source: str) -> str:
    return f"{source}:{run_id}:{uuid.uuid4().hex[:8]}"


def send_batch(source: CostSource, sink: KafkaChunkSink, engine: sa.Engine, *, batch_id: str) -> BatchReceipt:
    """Step 1: run the source's fetch into Kafka and record the batch as 'sent' with its chunk count
    once every chunk is acknowledged. A fetch that raises is recorded as 'failed' and re-raised."""
    try:
        with sink.batch(batch_id) as receipt:
            for chunk in source.fetch(batch_id):
                sink.send(chunk)
    except Exception as exc:
        _record(engine, batch_id, source.name, FAILED, 0, {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    detail = {
        "topic": receipt.topic,
        "last_offsets": {str(p): o for p, o in sorted(receipt.last_offsets.items())},
        "payload_bytes": receipt.payload_bytes,
        "cost_rows": receipt.cost_rows,
    }
    _record(engine, batch_id, source.name, SENT, receipt.chunks, detail)
    log.info(
        "batch %s of %s: %d chunks (%d cost rows) acknowledged",
        batch_id,
        source.name,
        receipt.chunks,
        receipt.cost_rows,
    )
    return receipt


def _record(engine: sa.Engine, batch_id: str, source: str, state: str, chunks: int, detail: dict[str, Any]) -> None:
    # The source staged its cursor rows and imported files in the same `detail` while fetching; the
    # handshake's keys are merged into it, never replace it, or the commit would find nothing to
    # advance and every run would fetch its sources' whole window again.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_batches (batch_id, source, chunk_count, state, detail) "
                "VALUES (:b, :s, :n, :st, CAST(:d AS json)) "
                "ON CONFLICT (batch_id) DO UPDATE SET chunk_count = EXCLUDED.chunk_count, "
                "state = EXCLUDED.state, "
                "detail = (COALESCE(ops.source_batches.detail::jsonb, '{}'::jsonb) || EXCLUDED.detail::jsonb)::json"
            ),
            {"b": batch_id, "s": source, "n": chunks, "st": state, "d": json.dumps(detail)},
        )


def bronze_chunk_counts(lake: Lake, batch_ids: Sequence[str], *, since: date | None = None) -> dict[str, int]:
    """Distinct (topic, partition, offset) per batch id in bronze; `since` prunes ingest_date partitions."""
    if not batch_ids or not lake.exists(BRONZE_COST_RECORDS.name):
        return {}
    filters: list[tuple[str, str, Any]] = [("batch_id", "in", list(batch_ids))]
    if since is not None:
        filters.append(("ingest_date", ">=", since))
    rows = lake.read_arrow(
        BRONZE_COST_RECORDS.name, columns=["batch_id", "topic", "partition", "offset"], filters=filters
    )
    if rows.num_rows == 0:
        return {}
    # Idempotent bronze holds each offset once; counting distinct coordinates keeps this true even if
    # a non-idempotent producer elsewhere ever wrote a chunk twice.
    distinct = rows.group_by(["batch_id", "topic", "partition", "offset"]).aggregate([])
    counted = distinct.group_by("batch_id").aggregate([("offset", "count")])
    return dict(
        zip(counted["batch_id"].to_pylist(), pc.cast(counted["offset_count"], "int64").to_pylist(), strict=True)
    )


def mark_in_bronze(engine: sa.Engine, lake: Lake) -> list[str]:
    """Step 2: every 'sent' batch whose chunks are all in bronze becomes 'in_bronze'. Returns their ids."""
    with engine.connect() as conn:
        pending = conn.execute(
            sa.text("SELECT batch_id, chunk_count, created_at FROM ops.source_batches WHERE state = :s"), {"s": SENT}
        ).all()
    if not pending:
        return []
    since = min(r.created_at for r in pending).astimezone(UTC).date()
    counts = bronze_chunk_counts(lake, [r.batch_id for r in pending], since=since)
    done = [r.batch_id for r in pending if counts.get(r.batch_id, 0) >= r.chunk_count]
    if done:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE ops.source_batches SET state = :new WHERE batch_id = ANY(:ids) AND state = :old"),
                {"new": IN_BRONZE, "ids": done, "old": SENT},
            )
    return done


def commit_batch(source: CostSource, engine: sa.Engine, batch_id: str) -> None:
    """Step 3: the source's cursor advances (source.commit) only for a batch bronze holds."""
    with engine.connect() as conn:
        state = conn.execute(
            sa.text("SELECT state FROM ops.source_batches WHERE batch_id = :b"), {"b": batch_id}
        ).scalar_one_or_none()
    if state != IN_BRONZE:
        raise RuntimeError(f"batch {batch_id} is {state!r}, not {IN_BRONZE!r}: its cursor must not advance")
    source.commit(batch_id)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ops.source_batches SET state = :s WHERE batch_id = :b"), {"s": COMMITTED, "b": batch_id}
        )


def batch_states(engine: sa.Engine, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest batches and their states, newest first (for the UI)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT batch_id, source, created_at, chunk_count, state, detail FROM ops.source_batches "
                "ORDER BY created_at DESC LIMIT :n"
            ),
            {"n": limit},
        ).mappings()
        return [dict(r) for r in rows]
