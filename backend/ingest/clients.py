"""The one factory for Kafka clients (kafka-python) built from Settings, and topic creation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from backend.config import Settings

log = logging.getLogger(__name__)

# Producer tuning, measured with bench/bench_kafka.py (one message per chunk of thousands of rows):
# - batch_size well above one chunk so a record batch holds several chunks and one request carries
#   many; linger_ms lets a partition's batch fill while the source produces the next chunk.
# - compression off by default: Parquet payloads are already compressed and CSV/JSON chunks stay below
#   the message limit uncompressed; the bench records what lz4/zstd/gzip cost and save.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # kafka-python 3 supports the idempotent producer (InitProducerId + sequence numbers) and Tansu
    # accepts it: a retried request after a lost ack can never write a chunk twice.
    "enable_idempotence": True,
    "linger_ms": 5,
    "batch_size": 4 * 1024 * 1024,
    "compression_type": None,
    "max_in_flight_requests_per_connection": 5,
    "delivery_timeout_ms": 120_000,
    "request_timeout_ms": 30_000,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    # Offsets are committed by hand, only after the bronze Delta commit.
    "enable_auto_commit": False,
    # A group with no committed offset (new group, or a broker that forgot them) starts at the
    # beginning: reading twice is absorbed by bronze's idempotence, skipping would lose data.
    "auto_offset_reset": "earliest",
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "max_poll_records": 2000,
    "check_crcs": True,
}


def probe_timeouts(settings: Settings) -> dict[str, Any]:
    """Client overrides for a page or health check: fail fast on an unreachable broker."""
    return {
        "bootstrap_timeout_ms": settings.kafka_probe_timeout_ms,
        "request_timeout_ms": settings.kafka_probe_timeout_ms,
    }


def bootstrap(settings: Settings) -> list[str]:
    if not settings.kafka_bootstrap_servers:
        raise ValueError(
            "KAFKA_BOOTSTRAP_SERVERS is empty: start the runtime (backend.runtime.Runtime) and use its "
            "endpoints, or set it to a broker"
        )
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    config = {**PRODUCER_DEFAULTS, **overrides}
    # Let a chunk at the configured limit through the client's own check; our check in the sink gives
    # the clear error first.
    config.setdefault("max_request_size", settings.kafka_max_message_bytes + 64 * 1024)
    return KafkaProducer(bootstrap_servers=bootstrap(settings), client_id="costlake-producer", **config)


def make_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    """A consumer of the settings' group that is given partitions with assign(), never subscribe().

    Measured on Tansu: subscribe() with kafka-python's defaults took ~23 s before the first assignment
    (the broker holds a JoinGroup for a time that follows session_timeout_ms, 45 s by default; with
    session_timeout_ms=6000 it still took ~3 s). The pipeline runs one bronze consumer at a time (it
    holds the run lock), so group rebalancing buys nothing: assign() starts fetching at once, and the
    group id is used only to store committed offsets (simple-consumer commits, generation -1)."""
    config = {**CONSUMER_DEFAULTS, **overrides}
    config.setdefault("max_partition_fetch_bytes", max(settings.kafka_max_message_bytes * 2, 1024 * 1024))
    return KafkaConsumer(
        bootstrap_servers=bootstrap(settings),
        group_id=settings.kafka_consumer_group,
        client_id="costlake-bronze",
        **config,
    )


def make_admin(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="costlake-admin", **overrides)


def ensure_topics(
    settings: Settings, topics: Sequence[str] | None = None, *, admin: KafkaAdminClient | None = None
) -> list[str]:
    """Create the topics (default: the cost topic) with settings.kafka_topic_partitions when missing;
    returns the names created. Existing topics are left as they are (partition count included)."""
    names = list(topics or [settings.kafka_topic_costs])
    own = admin is None
    admin = admin or make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in names if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, settings.kafka_topic_partitions, 1)])
                created.append(topic)
                log.info("created topic %s with %d partitions", topic, settings.kafka_topic_partitions)
            except TopicAlreadyExistsError:
                # Another process created it between list and create: fine, it exists.
                log.info("topic %s was created concurrently", topic)
        return created
    finally:
        if own:
            admin.close()
