"""Batches of the cursor handshake in `ops.source_batches`: sent to Kafka, in bronze, committed (or failed)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

# States of ops.source_batches.state, in order. 'failed' marks a fetch that raised part-way: its chunks
# may be in Kafka, but the batch is never complete, so the cursor does not move.
SENT, IN_BRONZE, COMMITTED, FAILED = "sent", "in_bronze", "committed", "failed"


def record(engine: sa.Engine, batch_id: str, source: str, state: str, chunks: int, detail: dict[str, Any]) -> None:
    """Insert the batch, or move it to `state` with this chunk count.

    The source staged its cursor rows and imported files in the same `detail` while fetching; the
    handshake's keys are merged into it, never replace it, or the commit would find nothing to advance
    and every run would fetch its sources' whole window again."""
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


def sent(engine: sa.Engine) -> list[tuple[str, int, datetime]]:
    """(batch id, chunk count, created at) of every batch sent and not yet found whole in bronze."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT batch_id, chunk_count, created_at FROM ops.source_batches WHERE state = :s"), {"s": SENT}
        ).all()
    return [(r.batch_id, r.chunk_count, r.created_at) for r in rows]


def mark_in_bronze(engine: sa.Engine, batch_ids: list[str]) -> None:
    """Sent batches bronze now holds whole become 'in_bronze' (a batch in another state is left as it is)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ops.source_batches SET state = :new WHERE batch_id = ANY(:ids) AND state = :old"),
            {"new": IN_BRONZE, "ids": batch_ids, "old": SENT},
        )


def state(engine: sa.Engine, batch_id: str) -> str | None:
    """The batch's state, None for a batch never recorded."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT state FROM ops.source_batches WHERE batch_id = :b"), {"b": batch_id}
        ).scalar_one_or_none()


def mark_committed(engine: sa.Engine, batch_id: str) -> None:
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
