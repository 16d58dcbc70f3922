"""The cursor handshake: fetch into Kafka under a batch id, drain to bronze, and let a source's cursor advance only for batches bronze holds."""

from __future__ import annotations

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
from backend.mart import batches
from backend.mart.batches import FAILED, IN_BRONZE, SENT
from backend.sources.base import CostSource

log = logging.getLogger(__name__)


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
        batches.record(engine, batch_id, source.name, FAILED, 0, {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    detail = {
        "topic": receipt.topic,
        "last_offsets": {str(p): o for p, o in sorted(receipt.last_offsets.items())},
        "payload_bytes": receipt.payload_bytes,
        "cost_rows": receipt.cost_rows,
    }
    batches.record(engine, batch_id, source.name, SENT, receipt.chunks, detail)
    log.info(
        "batch %s of %s: %d chunks (%d cost rows) acknowledged",
        batch_id,
        source.name,
        receipt.chunks,
        receipt.cost_rows,
    )
    return receipt


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
    pending = batches.sent(engine)
    if not pending:
        return []
    since = min(created for _, _, created in pending).astimezone(UTC).date()
    counts = bronze_chunk_counts(lake, [batch_id for batch_id, _, _ in pending], since=since)
    done = [batch_id for batch_id, chunks, _ in pending if counts.get(batch_id, 0) >= chunks]
    if done:
        batches.mark_in_bronze(engine, done)
    return done


def commit_batch(source: CostSource, engine: sa.Engine, batch_id: str) -> None:
    """Step 3: the source's cursor advances (source.commit) only for a batch bronze holds."""
    state = batches.state(engine, batch_id)
    if state != IN_BRONZE:
        raise RuntimeError(f"batch {batch_id} is {state!r}, not {IN_BRONZE!r}: its cursor must not advance")
    source.commit(batch_id)
    batches.mark_committed(engine, batch_id)


def commit_held(engine: sa.Engine, lake: Lake, sent: Sequence[tuple[CostSource, str]]) -> tuple[list[str], list[str]]:
    """Steps 2 and 3 for the (source, batch id) pairs a run sent: mark what bronze holds, advance exactly those
    cursors. Returns (committed, not in bronze): a batch the broker lost keeps its cursor, so it is fetched again."""
    in_bronze = set(mark_in_bronze(engine, lake))
    committed, missing = [], []
    for source, batch_id in sent:
        if batch_id in in_bronze:
            commit_batch(source, engine, batch_id)
            committed.append(batch_id)
        else:
            missing.append(batch_id)
    return committed, missing
