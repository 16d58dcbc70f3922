"""Kafka ingest benchmark: cost rows/s produced and landed in bronze with kafka-python vs confluent-kafka, same broker, same payloads."""

from __future__ import annotations

import io
import logging
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from backend.ingest import envelope
from backend.ingest.bronze import ConsumedMessage, build_batch
from backend.ingest.clients import ensure_topics
from backend.ingest.consumer import drain
from backend.ingest.producer import KafkaChunkSink
from backend.lake import Lake, lake_from_settings
from backend.lake.catalog import BRONZE_COST_RECORDS
from backend.runtime import kafka as kafka_service
from backend.sources.base import ContentType, PayloadFormat, RawChunk
from bench.common import BenchResult, PeakMemory, timed
from tests.conftest import make_settings

log = logging.getLogger("bench.kafka")


def synthetic_chunks(total_rows: int, rows_per_chunk: int, *, limit: int) -> list[RawChunk]:
    """Parquet slices of the synthetic estate (FOCUS columns), one chunk per slice, each under `limit` bytes."""
    from backend.demo.estate import generate_estate

    estate = generate_estate(target_rows=max(total_rows, 1000), months=2)
    costs = estate.plain_costs().slice(0, total_rows)
    chunks = []
    start = 0
    while start < costs.num_rows:
        size = rows_per_chunk
        while True:
            buf = io.BytesIO()
            pq.write_table(costs.slice(start, size), buf, compression="zstd")
            if buf.tell() <= limit - 4096 or size <= 100:
                break
            size //= 2  # keep every chunk under the message limit
        n = min(size, costs.num_rows - start)
        chunks.append(
            RawChunk(
                source="synthetic",
                format=PayloadFormat.focus,
                content_type=ContentType.parquet,
                key=f"{estate.billing_account_id}|chunk-{len(chunks) % 64}",
                payload=buf.getvalue(),
                meta={"source": "synthetic", "chunk_index": str(len(chunks)), "row_count": str(n)},
            )
        )
        start += n
    return chunks


def run_kafka_python(settings, chunks: list[RawChunk], *, producer_options=None) -> dict:
    lake = lake_from_settings(settings)
    rows = sum(int(c.meta["row_count"]) for c in chunks)
    # Contexts enter left to right: the clock starts after the sink (and its topic) exists.
    with KafkaChunkSink(settings, producer_options=producer_options) as sink, timed() as produce, sink.batch("bench"):
        for chunk in chunks:
            sink.send(chunk)
    with timed() as consume:
        result = drain(settings, lake, run_id="bench-kafka-python")
    assert result.cost_rows == rows, (result.cost_rows, rows)
    return _row("kafka-python", rows, chunks, produce.seconds, consume.seconds)


def run_confluent(settings, chunks: list[RawChunk]) -> dict:
    """The same envelope and the same bronze write path, with librdkafka doing the Kafka I/O."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    lake: Lake = lake_from_settings(settings)
    topic = settings.kafka_topic_costs
    ensure_topics(settings, [topic])
    rows = sum(int(c.meta["row_count"]) for c in chunks)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": settings.kafka_max_message_bytes + 65536,
        }
    )
    with timed() as produce:
        for chunk in chunks:
            key, value, headers = envelope.encode(chunk, batch_id="bench", sent_at=envelope.utc_now())
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        if producer.flush(60):
            raise RuntimeError("confluent producer did not deliver every message")
    with timed() as consume:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"{settings.kafka_consumer_group}-confluent",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        parts = list(range(settings.kafka_topic_partitions))
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        messages: list[ConsumedMessage] = []
        deadline = time.monotonic() + 120
        while len(messages) < len(chunks) and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    raise RuntimeError(m.error())
                messages.append(
                    ConsumedMessage(
                        m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers() or ()
                    )
                )
            if len(messages) >= 5000 or len(messages) == len(chunks):
                batch = build_batch(messages, progress={}, run_id="bench-confluent")
                lake.append(
                    BRONZE_COST_RECORDS.name,
                    batch.bronze,
                    run_id="bench-confluent",
                    partition_by=BRONZE_COST_RECORDS.partition_by,
                )
        consumer.commit(asynchronous=False)
        consumer.close()
    assert lake.count(BRONZE_COST_RECORDS.name) == len(chunks)
    return _row("confluent-kafka", rows, chunks, produce.seconds, consume.seconds)


def run_per_row(settings, rows: int) -> dict:
    """One message per cost row (CSV line with its header) with kafka-python: the alternative to chunks."""
    lines = [f"2026-01-01,{i}.123456,/subscriptions/s/resourceGroups/rg/providers/x/r{i}" for i in range(rows)]
    chunks = [
        RawChunk(
            source="bench",
            format=PayloadFormat.focus,
            content_type=ContentType.csv,
            key=f"acct|2026-01-{1 + i % 28:02d}",
            payload=f"ChargePeriodStart,BilledCost,ResourceId\n{line}\n".encode(),
            meta={"row_count": "1"},
        )
        for i, line in enumerate(lines)
    ]
    row = run_kafka_python(settings, chunks)
    row["client"] = "kafka-python, one message per row"
    return row


def _row(client: str, rows: int, chunks: list[RawChunk], produce_s: float, consume_s: float) -> dict:
    total = produce_s + consume_s
    return {
        "client": client,
        "cost_rows": rows,
        "messages": len(chunks),
        "mb": round(sum(len(c.payload) for c in chunks) / 1e6, 1),
        "produce_s": round(produce_s, 3),
        "consume_to_bronze_s": round(consume_s, 3),
        "produce_rows_per_s": round(rows / produce_s),
        "consume_rows_per_s": round(rows / consume_s),
        "end_to_end_rows_per_s": round(rows / total),
    }


def main(quick: bool = False) -> None:
    # kafka-python logs every connection at INFO; keep the bench output to our own lines.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    total_rows, rows_per_chunk, per_row = (50_000, 5_000, 2_000) if quick else (1_000_000, 10_000, 20_000)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp, PeakMemory() as memory:
        root = Path(tmp)
        proc, address = kafka_service.spawn(root / "tansu.log")
        try:

            def settings_for(name: str):
                return make_settings(
                    root / name,
                    kafka_bootstrap_servers=address,
                    kafka_topic_costs=f"bench.{name}.{uuid.uuid4().hex[:6]}",
                    lake_uri=str(root / name / "lake"),
                )

            limit = settings_for("probe").kafka_max_message_bytes
            chunks = synthetic_chunks(total_rows, rows_per_chunk, limit=limit)
            log.info("%d chunks, %.1f MB", len(chunks), sum(len(c.payload) for c in chunks) / 1e6)
            # Warm-up (discarded): first-use costs of imports, the Delta writer and connections would
            # otherwise land on whichever client runs first.
            run_kafka_python(settings_for("warm"), chunks[:5])
            run_confluent(settings_for("warm-ck"), chunks[:5])
            rows = [run_kafka_python(settings_for("kp"), chunks), run_confluent(settings_for("ck"), chunks)]
            for codec in ("lz4", "zstd", "gzip"):
                row = run_kafka_python(
                    settings_for(f"kp-{codec}"), chunks, producer_options={"compression_type": codec}
                )
                row["client"] = f"kafka-python, {codec}"
                rows.append(row)
            rows.append(run_per_row(settings_for("per-row"), per_row))
        finally:
            kafka_service.terminate(proc.pid)
    ratio = rows[0]["end_to_end_rows_per_s"] / rows[1]["end_to_end_rows_per_s"]
    result = BenchResult(
        name="kafka",
        description=(
            "Synthetic-estate FOCUS rows as zstd Parquet chunks, one Kafka message per chunk, produced "
            "(acks=all, idempotent) to an embedded Tansu broker and drained into the bronze Delta table; "
            "the same payloads and bronze write path with confluent-kafka as the reference."
        ),
        rows=rows,
        notes=[
            f"kafka-python / confluent-kafka end to end: {ratio:.2f}x (goal >= 0.7x)",
            f"kafka-python end to end: {rows[0]['end_to_end_rows_per_s']:,} cost rows/s (goal >= 100,000)",
            f"peak RSS of the process tree: {memory.peak_gb} GB",
            "compression rows: producer compression_type on already zstd-compressed Parquet payloads",
            "per-row row: one message per cost row, the alternative the chunk design rejects",
            f"quick={quick}",
        ],
    )
    result.write()
    for line in result.notes:
        log.info(line)
