"""Pure bronze logic: Kafka messages to bronze / dead-letter Arrow tables, replay filtering and the Delta app-transaction ids."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from backend.ingest.envelope import Envelope, InvalidMessageError, decode
from backend.lake.catalog import BRONZE_COST_RECORDS, BRONZE_DEAD_LETTERS


@dataclass(frozen=True)
class ConsumedMessage:
    """One Kafka record as the consumer saw it (client-neutral, so this module needs no Kafka)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def app_id(group: str, topic: str, partition: int, topic_id: str | None) -> str:
    """Delta app-transaction id for one partition's high-water offset in one table.

    The topic id is part of it because a broker with memory storage (or a topic deleted and
    re-created) starts offsets again at 0: under the old id, new offsets <= the old high-water would be
    skipped as "already in bronze" and lost. A new topic id starts a fresh sequence instead."""
    base = f"{group}:{topic}:{partition}"
    return f"{base}@{topic_id}" if topic_id else base


@dataclass
class PartitionProgress:
    """What bronze and the dead-letter table already hold of one partition (None = nothing yet)."""

    bronze_through: int | None = None
    dead_letters_through: int | None = None

    def start_offset(self) -> int | None:
        """Where to resume: right after everything bronze has processed; None = from the beginning.

        Bronze's high-water, not the group's committed offset, is the truth: a group offset can run
        ahead of bronze (a lake restored or reset while Kafka kept the log), and trusting it would
        skip messages bronze never got. Reading from the beginning costs a re-read that the
        high-water filter drops, never a loss."""
        return None if self.bronze_through is None else self.bronze_through + 1


@dataclass
class BronzeBatch:
    """The rows of one bronze commit, the dead letters that go with it, and per-partition high-waters."""

    bronze: pa.Table
    dead_letters: pa.Table
    # (topic, partition) -> highest offset processed (bronze row or dead letter) in this batch
    processed_through: dict[tuple[str, int], int] = field(default_factory=dict)
    # (topic, partition) -> highest offset written to the dead-letter table in this batch
    dead_through: dict[tuple[str, int], int] = field(default_factory=dict)
    skipped: int = 0  # replayed messages already in bronze / dead letters
    cost_rows: int = 0  # sum of meta row_count where the source said it
    payload_bytes: int = 0
    batch_ids: dict[str, int] = field(default_factory=dict)  # batch id -> messages in bronze


def build_batch(
    messages: Iterable[ConsumedMessage],
    *,
    progress: dict[tuple[str, int], PartitionProgress],
    run_id: str,
    ingested_at: datetime | None = None,
) -> BronzeBatch:
    """Decode messages into bronze rows; invalid ones become dead letters. Messages at or below what a
    table already holds for their partition are skipped (replay after a crash adds nothing)."""
    now = (ingested_at or datetime.now(UTC)).astimezone(UTC)
    today = now.date()
    good: list[tuple[ConsumedMessage, Envelope]] = []
    bad: list[tuple[ConsumedMessage, str]] = []
    processed: dict[tuple[str, int], int] = {}
    dead_through: dict[tuple[str, int], int] = {}
    skipped = 0
    for msg in messages:
        tp = (msg.topic, msg.partition)
        done = progress.get(tp) or PartitionProgress()
        processed[tp] = max(processed.get(tp, -1), msg.offset)
        if done.bronze_through is not None and msg.offset <= done.bronze_through:
            skipped += 1
            continue
        try:
            good.append((msg, decode(msg.key, msg.value, list(msg.headers))))
        except InvalidMessageError as exc:
            if done.dead_letters_through is not None and msg.offset <= done.dead_letters_through:
                skipped += 1
                continue
            bad.append((msg, str(exc)))
            dead_through[tp] = max(dead_through.get(tp, -1), msg.offset)

    cost_rows = 0
    batch_ids: dict[str, int] = {}
    for _, env in good:
        batch_ids[env.batch_id] = batch_ids.get(env.batch_id, 0) + 1
        cost_rows += _row_count(env.meta_json)
    n = len(good)
    bronze = pa.Table.from_arrays(
        [
            pa.array([m.topic for m, _ in good], pa.string()),
            pa.array([m.partition for m, _ in good], pa.int32()),
            pa.array([m.offset for m, _ in good], pa.int64()),
            pa.array([e.key for _, e in good], pa.string()),
            pa.array(
                [_kafka_ts(m.timestamp_ms) for m, _ in good], BRONZE_COST_RECORDS.schema.field("kafka_timestamp").type
            ),
            pa.array([e.schema_version for _, e in good], pa.int32()),
            pa.array([e.source for _, e in good], pa.string()),
            pa.array([e.format for _, e in good], pa.string()),
            pa.array([e.content_type for _, e in good], pa.string()),
            pa.array([e.batch_id for _, e in good], pa.string()),
            pa.array([e.fetched_at for _, e in good], BRONZE_COST_RECORDS.schema.field("fetched_at").type),
            pa.array([e.meta_json for _, e in good], pa.string()),
            pa.array([e.payload for _, e in good], pa.binary()),
            pa.array([now] * n, BRONZE_COST_RECORDS.schema.field("ingested_at").type),
            pa.array([run_id] * n, pa.string()),
            pa.array([today] * n, pa.date32()),
        ],
        schema=BRONZE_COST_RECORDS.schema,
    )
    dead = pa.Table.from_arrays(
        [
            pa.array([m.topic for m, _ in bad], pa.string()),
            pa.array([m.partition for m, _ in bad], pa.int32()),
            pa.array([m.offset for m, _ in bad], pa.int64()),
            pa.array([m.key for m, _ in bad], pa.binary()),
            pa.array([m.value for m, _ in bad], pa.binary()),
            pa.array([_with_headers(err, m.headers) for m, err in bad], pa.string()),
            pa.array([now] * len(bad), BRONZE_DEAD_LETTERS.schema.field("ingested_at").type),
            pa.array([run_id] * len(bad), pa.string()),
            pa.array([today] * len(bad), pa.date32()),
        ],
        schema=BRONZE_DEAD_LETTERS.schema,
    )
    return BronzeBatch(
        bronze=bronze,
        dead_letters=dead,
        processed_through=processed,
        dead_through=dead_through,
        skipped=skipped,
        cost_rows=cost_rows,
        payload_bytes=sum(len(e.payload) for _, e in good),
        batch_ids=batch_ids,
    )


def _row_count(meta_json: str) -> int:
    try:
        return int(json.loads(meta_json).get("row_count", 0))
    except ValueError:
        # row_count is informational (throughput); a non-number there is not worth a dead letter.
        return 0


def _kafka_ts(timestamp_ms: int | None) -> datetime | None:
    if timestamp_ms is None or timestamp_ms < 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


def _with_headers(error: str, headers: Sequence[tuple[str, bytes]]) -> str:
    # The dead-letter schema has no headers column; keep them in the error text so nothing about the
    # message is lost (values shown with replacement characters where they are not UTF-8).
    if not headers:
        return error
    shown = {name: (raw or b"").decode("utf-8", "replace")[:500] for name, raw in headers}
    return f"{error} | headers={json.dumps(shown, sort_keys=True)}"
