"""Read-only views of ingest for the UI: consumer lag and last offsets per partition, and the last drain's throughput."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import TopicPartition

from backend.config import Settings
from backend.ingest import consumer as bronze_consumer
from backend.ingest.bronze import app_id
from backend.ingest.clients import make_consumer, probe_timeouts
from backend.lake import Lake
from backend.lake.catalog import BRONZE_COST_RECORDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end_offset: int  # as the broker reports it (Tansu 0.6: base offset of the last batch + 1)
    committed: int | None  # the group's committed offset (next offset to read)
    bronze_through: int | None  # highest offset bronze has processed (its Delta app transaction)
    lag: int  # messages not yet in bronze (lower bound on Tansu, see end_offset)


@dataclass(frozen=True)
class DrainStats:
    drain_id: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    commits: int
    messages: int
    cost_rows: int
    payload_bytes: int
    dead_letters: int

    @property
    def seconds(self) -> float:
        return max((self.finished_at - self.started_at).total_seconds(), 1e-6)

    @property
    def cost_rows_per_s(self) -> float:
        return self.cost_rows / self.seconds

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds


def consumer_lag(
    settings: Settings, lake: Lake, *, topics: Sequence[str] | None = None, probe: bool = False
) -> list[PartitionLag]:
    """Lag of the bronze consumer group per topic/partition (also the "last offsets" view).

    `probe`: a page is asking, so an unreachable broker fails within seconds instead of kafka-python's 30 s."""
    names = list(topics or [settings.kafka_topic_costs])
    overrides = probe_timeouts(settings) if probe else {}
    meta = bronze_consumer.topic_ids(settings, names, **overrides)
    kafka = make_consumer(settings, **overrides)
    try:
        tps = [TopicPartition(t, p) for t in names for p in meta[t][1]]
        ends = kafka.end_offsets(tps)
        out = []
        for tp in tps:
            committed = kafka.committed(tp)
            through = lake.transaction_version(
                BRONZE_COST_RECORDS.name,
                app_id(settings.kafka_consumer_group, tp.topic, tp.partition, meta[tp.topic][0]),
            )
            done = through + 1 if through is not None else (committed or 0)
            end = ends.get(tp, 0)
            out.append(
                PartitionLag(
                    topic=tp.topic,
                    partition=tp.partition,
                    end_offset=end,
                    committed=committed,
                    bronze_through=through,
                    lag=max(end - done, 0),
                )
            )
        return out
    finally:
        kafka.close(autocommit=False)


def drain_history(lake: Lake, *, limit: int = 200) -> list[DrainStats]:
    """Drains reconstructed from bronze's Delta commit metadata, newest first."""
    if not lake.exists(BRONZE_COST_RECORDS.name):
        return []
    drains: dict[str, dict] = {}
    for commit in lake.history(BRONZE_COST_RECORDS.name, limit=limit):
        drain_id = commit.get(bronze_consumer.META_DRAIN_ID)
        if not drain_id:
            continue
        at = datetime.fromtimestamp(commit["timestamp"] / 1000, tz=UTC)
        d = drains.setdefault(
            drain_id,
            {
                "run_id": commit.get("costlake.run_id", ""),
                "started_at": datetime.fromisoformat(commit[bronze_consumer.META_DRAIN_STARTED]),
                "finished_at": at,
                "commits": 0,
                "messages": 0,
                "cost_rows": 0,
                "payload_bytes": 0,
                "dead_letters": 0,
            },
        )
        d["finished_at"] = max(d["finished_at"], at)
        d["commits"] += 1
        d["messages"] += int(commit.get(bronze_consumer.META_MESSAGES, 0))
        d["cost_rows"] += int(commit.get(bronze_consumer.META_COST_ROWS, 0))
        d["payload_bytes"] += int(commit.get(bronze_consumer.META_PAYLOAD_BYTES, 0))
        d["dead_letters"] += int(commit.get(bronze_consumer.META_DEAD_LETTERS, 0))
    stats = [DrainStats(drain_id=k, **v) for k, v in drains.items()]
    return sorted(stats, key=lambda s: s.started_at, reverse=True)
