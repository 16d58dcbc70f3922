"""Kafka -> bronze, drain-then-stop; offsets committed to Kafka only after the bronze Delta commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from backend.config import Settings
from backend.ingest.bronze import BronzeBatch, ConsumedMessage, PartitionProgress, app_id, build_batch
from backend.ingest.clients import ensure_topics, make_admin, make_consumer
from backend.lake import Lake
from backend.lake.catalog import BRONZE_COST_RECORDS, BRONZE_DEAD_LETTERS

log = logging.getLogger(__name__)

# Commit-metadata keys on bronze commits: the UI's "last drain" view is read back from Delta history,
# so it needs no table of its own and survives with the lake.
META_DRAIN_ID = "costlake.ingest.drain_id"
META_DRAIN_STARTED = "costlake.ingest.drain_started_at"
META_MESSAGES = "costlake.ingest.messages"
META_COST_ROWS = "costlake.ingest.cost_rows"
META_PAYLOAD_BYTES = "costlake.ingest.payload_bytes"
META_DEAD_LETTERS = "costlake.ingest.dead_letters"


class DrainTimeoutError(TimeoutError):
    """The drain made no progress for too long (broker down or unreachable)."""


class TopicResetError(RuntimeError):
    """A topic's id changed under a running consumer (broker restarted with memory storage, or the topic was re-created)."""


@dataclass
class DrainResult:
    """What one drain did; the pipeline records it in its run step."""

    run_id: str
    drain_id: str
    started_at: datetime
    seconds: float = 0.0
    messages: int = 0  # messages read, including skipped replays and dead letters
    bronze_rows: int = 0
    dead_letters: int = 0
    skipped: int = 0
    cost_rows: int = 0
    payload_bytes: int = 0
    delta_commits: int = 0
    offset_commit_failures: int = 0
    batch_ids: dict[str, int] = field(default_factory=dict)
    end_offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> end offset at start

    @property
    def cost_rows_per_s(self) -> float:
        return self.cost_rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Partition:
    tp: TopicPartition
    topic_id: str | None
    app_id: str  # the same id keys the partition's high-water in bronze and in the dead-letter table


def topic_ids(
    settings: Settings, topics: Sequence[str], **client_overrides: Any
) -> dict[str, tuple[str | None, list[int]]]:
    """topic -> (topic id or None, partition numbers), from the broker's metadata."""
    admin = make_admin(settings, **client_overrides)
    try:
        described = admin.describe_topics(list(topics))
    finally:
        admin.close()
    out: dict[str, tuple[str | None, list[int]]] = {}
    for desc in described:
        if desc.get("error_code"):
            raise KafkaError(f"describe topic {desc.get('name')}: error code {desc['error_code']}")
        tid = str(desc.get("topic_id") or "")
        # Brokers without topic ids answer the all-zero UUID.
        out[desc["name"]] = (
            None if not tid or set(tid) <= {"0", "-"} else tid,
            sorted(p["partition_index"] for p in desc["partitions"]),
        )
    return out


class BronzeIngestor:
    """One consumer session over the settings' topics: assign, resume from bronze, poll, commit.

    Write order per flush, each step idempotent, so a crash anywhere adds nothing on replay:
    1. dead letters appended with per-partition app transactions (their high-water offsets);
    2. bronze rows appended with per-partition app transactions = every offset processed, bronze rows
       and dead letters alike (one Delta commit, atomic with the rows);
    3. offsets committed to the Kafka group (a convenience for lag views; bronze's app transactions,
       not the group offsets, decide what is skipped on restart).
    """

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        *,
        run_id: str,
        topics: Sequence[str] | None = None,
        consumer: KafkaConsumer | None = None,
        commit_bytes: int = 64 * 1024 * 1024,
        commit_messages: int = 5_000,
        after_bronze_write: Callable[[], None] | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.lake = lake
        self.run_id = run_id
        self.topics = list(topics or [settings.kafka_topic_costs])
        self.group = settings.kafka_consumer_group
        self.commit_bytes = commit_bytes
        self.commit_messages = commit_messages
        # Test hook: called after the bronze commit and before the Kafka offset commit (crash tests).
        self.after_bronze_write = after_bronze_write
        self._own_consumer = consumer is None
        ensure_topics(settings, self.topics)
        self.consumer = consumer or make_consumer(settings, **(consumer_options or {}))
        self.partitions: dict[tuple[str, int], _Partition] = {}
        self.progress: dict[tuple[str, int], PartitionProgress] = {}
        self._topic_ids: dict[str, str | None] = {}
        self._assign()

    # --- setup ---------------------------------------------------------------------------
    def _assign(self) -> None:
        meta = topic_ids(self.settings, self.topics)
        for topic in self.topics:
            tid, partitions = meta[topic]
            self._topic_ids[topic] = tid
            for p in partitions:
                self.partitions[(topic, p)] = _Partition(
                    tp=TopicPartition(topic, p),
                    topic_id=tid,
                    app_id=app_id(self.group, topic, p, tid),
                )
        tps = [part.tp for part in self.partitions.values()]
        self.consumer.assign(tps)
        ends = self.consumer.end_offsets(tps)
        for key, part in self.partitions.items():
            progress = PartitionProgress(
                bronze_through=self.lake.transaction_version(BRONZE_COST_RECORDS.name, part.app_id),
                dead_letters_through=self.lake.transaction_version(BRONZE_DEAD_LETTERS.name, part.app_id),
            )
            self.progress[key] = progress
            end = ends.get(part.tp, 0)
            if progress.bronze_through is not None and progress.bronze_through >= end and part.topic_id is None:
                # Normally bronze_through == end - 1 when caught up; beyond that the log went backwards.
                raise TopicResetError(
                    f"{part.tp} ends at offset {end} but bronze already holds offsets through "
                    f"{progress.bronze_through}, and the broker gives no topic id to tell a re-created topic "
                    "apart; use a broker with topic ids (Kafka >= 2.8) or a new topic name"
                )
            start = progress.start_offset()
            if start is None:
                self.consumer.seek_to_beginning(part.tp)
            else:
                self.consumer.seek(part.tp, start)
        log.info("bronze consumer assigned %d partitions of %s (group %s)", len(tps), ",".join(self.topics), self.group)

    def end_offsets(self) -> dict[TopicPartition, int]:
        """Log end offsets as the broker reports them. Tansu 0.6 reports the last record batch's base
        offset + 1 rather than the true end (measured): a drain to these targets still lands whole
        batches, so it ends at the true end of the log as it was at the start."""
        return self.consumer.end_offsets([p.tp for p in self.partitions.values()])

    def caught_up(self, targets: dict[TopicPartition, int]) -> bool:
        return all(self.consumer.position(tp) >= end for tp, end in targets.items())

    # --- the loop ------------------------------------------------------------------------
    def poll(self, *, timeout_ms: int = 200) -> list[ConsumedMessage]:
        records = self.consumer.poll(timeout_ms=timeout_ms)
        out: list[ConsumedMessage] = []
        for tp, batch in records.items():
            for rec in batch:
                out.append(
                    ConsumedMessage(
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=rec.offset,
                        timestamp_ms=rec.timestamp,
                        key=rec.key,
                        value=rec.value,
                        headers=tuple(rec.headers or ()),
                    )
                )
        return out

    def flush(self, messages: list[ConsumedMessage], result: DrainResult) -> None:
        """Land a buffer of messages in bronze (and dead letters), one Delta commit per `commit_messages`
        / `commit_bytes` slice, committing the group offsets after each."""
        start, size = 0, 0
        for i, msg in enumerate(messages):
            size += len(msg.value or b"")
            if i + 1 - start >= self.commit_messages or size >= self.commit_bytes:
                self._flush_slice(messages[start : i + 1], result)
                start, size = i + 1, 0
        self._flush_slice(messages[start:], result)

    def _flush_slice(self, messages: list[ConsumedMessage], result: DrainResult) -> None:
        if not messages:
            return
        self._check_topic_ids()
        batch = build_batch(messages, progress=self.progress, run_id=self.run_id)
        self._write(batch, result)
        result.messages += len(messages)
        result.skipped += batch.skipped
        offsets = {
            self.partitions[key].tp: OffsetAndMetadata(last + 1, "", -1)
            for key, last in batch.processed_through.items()
        }
        try:
            self.consumer.commit(offsets)
        except KafkaError:
            # Not fatal: bronze's app transactions already record progress and decide what is skipped on
            # restart; the group offset only feeds the lag view. Counted and surfaced in the result.
            result.offset_commit_failures += 1
            log.warning("committing offsets of group %s failed; bronze holds the data", self.group, exc_info=True)

    def _write(self, batch: BronzeBatch, result: DrainResult) -> None:
        if batch.dead_letters.num_rows:
            self.lake.append(
                BRONZE_DEAD_LETTERS.name,
                batch.dead_letters,
                run_id=self.run_id,
                partition_by=BRONZE_DEAD_LETTERS.partition_by,
                app_transactions=[(self.partitions[k].app_id, v) for k, v in batch.dead_through.items()],
            )
            for key, last in batch.dead_through.items():
                self.progress[key].dead_letters_through = last
            for row in batch.dead_letters.select(["topic", "partition", "offset", "error"]).to_pylist():
                log.error(
                    "dead letter %s[%s]@%s: %s", row["topic"], row["partition"], row["offset"], row["error"][:300]
                )
        advanced = {
            k: v
            for k, v in batch.processed_through.items()
            if self.progress[k].bronze_through is None or v > self.progress[k].bronze_through
        }
        if batch.bronze.num_rows or advanced:
            self.lake.append(
                BRONZE_COST_RECORDS.name,
                batch.bronze,
                run_id=self.run_id,
                partition_by=BRONZE_COST_RECORDS.partition_by,
                app_transactions=[(self.partitions[k].app_id, v) for k, v in advanced.items()],
                metadata={
                    META_DRAIN_ID: result.drain_id,
                    META_DRAIN_STARTED: result.started_at.isoformat(),
                    META_MESSAGES: str(batch.bronze.num_rows),
                    META_COST_ROWS: str(batch.cost_rows),
                    META_PAYLOAD_BYTES: str(batch.payload_bytes),
                    META_DEAD_LETTERS: str(batch.dead_letters.num_rows),
                },
            )
            result.delta_commits += 1
            for key, last in advanced.items():
                self.progress[key].bronze_through = last
            if self.after_bronze_write is not None:
                self.after_bronze_write()
        result.bronze_rows += batch.bronze.num_rows
        result.dead_letters += batch.dead_letters.num_rows
        result.cost_rows += batch.cost_rows
        result.payload_bytes += batch.payload_bytes
        for batch_id, n in batch.batch_ids.items():
            result.batch_ids[batch_id] = result.batch_ids.get(batch_id, 0) + n

    def _check_topic_ids(self) -> None:
        # It guards the one case app ids cannot: a topic re-created while this session runs, whose new
        # offsets would otherwise be filtered against the old high-water. The ids come from the broker's
        # metadata through the admin API (one describe per bronze commit), as the session's start read them.
        if not any(self._topic_ids.values()):
            return  # a broker without topic ids: _assign refused what it could not tell apart
        try:
            current = topic_ids(self.settings, self.topics)
        except KafkaError as exc:
            # As before the check: a topic the broker cannot describe right now has no id to compare.
            log.warning("topic ids not checked before this bronze commit: %s", exc)
            return
        for topic, known in self._topic_ids.items():
            now = current.get(topic, (None, []))[0]
            if known and now is not None and now != known:
                raise TopicResetError(f"topic {topic} changed id from {known} to {now} during the session")

    def close(self) -> None:
        if self._own_consumer:
            # autocommit=False: offsets were committed explicitly after each bronze commit.
            self.consumer.close(autocommit=False)

    def __enter__(self) -> BronzeIngestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _new_result(run_id: str) -> DrainResult:
    started = datetime.now(UTC)
    return DrainResult(run_id=run_id, drain_id=f"{run_id}:{started.strftime('%Y%m%dT%H%M%S.%f')}", started_at=started)


def drain(
    settings: Settings,
    lake: Lake,
    *,
    run_id: str,
    topics: Sequence[str] | None = None,
    commit_bytes: int = 64 * 1024 * 1024,
    commit_messages: int = 5_000,
    idle_timeout_s: float = 60.0,
    after_bronze_write: Callable[[], None] | None = None,
    consumer_options: dict[str, Any] | None = None,
) -> DrainResult:
    """Drain-then-stop (like Spark's trigger-once): land everything up to the end offsets seen at the
    start, then return. Raises DrainTimeoutError when no message arrives for `idle_timeout_s` while
    short of those offsets."""
    result = _new_result(run_id)
    t0 = time.perf_counter()
    with BronzeIngestor(
        settings,
        lake,
        run_id=run_id,
        topics=topics,
        commit_bytes=commit_bytes,
        commit_messages=commit_messages,
        after_bronze_write=after_bronze_write,
        consumer_options=consumer_options,
    ) as ingestor:
        targets = ingestor.end_offsets()
        result.end_offsets = {f"{tp.topic}:{tp.partition}": end for tp, end in targets.items()}
        buffer: list[ConsumedMessage] = []
        buffered_bytes = 0
        last_progress = time.monotonic()
        while True:
            done = ingestor.caught_up(targets)
            if done or buffered_bytes >= commit_bytes or len(buffer) >= commit_messages:
                ingestor.flush(buffer, result)
                buffer, buffered_bytes = [], 0
            if done:
                break
            messages = ingestor.poll()
            if messages:
                last_progress = time.monotonic()
                buffer.extend(messages)
                buffered_bytes += sum(len(m.value or b"") for m in messages)
            elif time.monotonic() - last_progress > idle_timeout_s:
                raise DrainTimeoutError(
                    f"no message for {idle_timeout_s:.0f}s while draining to {result.end_offsets}; is the broker up?"
                )
    result.seconds = time.perf_counter() - t0
    log.info(
        "drained %d messages (%d bronze rows, %d dead letters, %d skipped, %d cost rows) in %.2fs",
        result.messages,
        result.bronze_rows,
        result.dead_letters,
        result.skipped,
        result.cost_rows,
        result.seconds,
    )
    return result
