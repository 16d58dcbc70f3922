"""Kafka -> bronze against the real Tansu broker: exactly once per offset, dead letters, lag and throughput views."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from kafka import KafkaProducer

from backend.ingest import monitor
from backend.ingest.consumer import drain
from backend.ingest.envelope import OversizedChunkError
from backend.ingest.producer import KafkaChunkSink
from backend.lake.catalog import BRONZE_COST_RECORDS, BRONZE_DEAD_LETTERS
from backend.sources.base import ContentType, PayloadFormat, RawChunk
from tests.ingest.chunks import csv_chunk, json_chunk, parquet_chunk


def _produce(settings, chunks, *, batch_id="b-1"):
    with KafkaChunkSink(settings) as sink, sink.batch(batch_id) as receipt:
        for chunk in chunks:
            sink.send(chunk)
    return receipt


def _coords(lake):
    table = lake.read_arrow(BRONZE_COST_RECORDS.name, columns=["topic", "partition", "offset"])
    return list(zip(*(table[c].to_pylist() for c in ("topic", "partition", "offset")), strict=True))


def test_produce_drain_exactly_once(ingest_settings, lake):
    chunks = [parquet_chunk(i) for i in range(12)] + [csv_chunk(1), json_chunk(2)]
    receipt = _produce(ingest_settings, chunks)
    assert receipt.chunks == 14 and sum(o + 1 for o in receipt.last_offsets.values()) == 14
    # Keys keep one (account, day) in one partition: both chunks of the same key land together.
    first = drain(ingest_settings, lake, run_id="run-1", commit_messages=5)
    assert first.bronze_rows == 14 and first.delta_commits >= 3 and first.cost_rows == 12 * 5 + 3 + 1
    again = drain(ingest_settings, lake, run_id="run-2")
    assert again.bronze_rows == 0
    coords = _coords(lake)
    assert len(coords) == len(set(coords)) == 14
    bronze = lake.read_arrow(BRONZE_COST_RECORDS.name)
    assert set(bronze["payload"].to_pylist()) == {c.payload for c in chunks}
    assert set(bronze["run_id"].to_pylist()) == {"run-1"}
    # Committed group offsets follow bronze; lag is zero.
    lags = monitor.consumer_lag(ingest_settings, lake)
    assert len(lags) == 3 and all(lag.lag == 0 for lag in lags)
    assert {lag.partition: lag.committed for lag in lags if lag.committed} == {
        p: o + 1 for p, o in receipt.last_offsets.items()
    }
    stats = next(iter(monitor.drain_history(lake, limit=50)), None)
    assert stats is not None and stats.run_id == "run-1" and stats.messages == 14 and stats.cost_rows_per_s > 0


def test_same_key_same_partition(ingest_settings, lake):
    chunks = [parquet_chunk(3, source=s) for s in ("a", "b", "c", "d")]
    _produce(ingest_settings, chunks)
    drain(ingest_settings, lake, run_id="r")
    table = lake.read_arrow(BRONZE_COST_RECORDS.name, columns=["kafka_key", "partition"])
    assert len(set(table["partition"].to_pylist())) == 1


def test_poison_messages_go_to_dead_letters_and_the_loop_goes_on(ingest_settings, lake):
    _produce(ingest_settings, [parquet_chunk(i) for i in range(3)])
    raw = KafkaProducer(bootstrap_servers=ingest_settings.kafka_bootstrap_servers)
    topic = ingest_settings.kafka_topic_costs
    raw.send(topic, key=b"acct-1|2026-01-01", value=b"\x00garbage")  # no envelope at all
    raw.send(
        topic, key=b"acct-1|2026-01-02", value=b"PAR1x", headers=[("costlake.v", b"7")]
    )  # unknown version, missing headers
    raw.flush()
    raw.close()
    _produce(ingest_settings, [parquet_chunk(i) for i in range(3, 6)], batch_id="b-2")
    result = drain(ingest_settings, lake, run_id="r")
    assert result.bronze_rows == 6 and result.dead_letters == 2
    dead = lake.read_arrow(BRONZE_DEAD_LETTERS.name)
    assert sorted(dead["raw_value"].to_pylist()) == [b"\x00garbage", b"PAR1x"]
    assert all("missing envelope headers" in e for e in dead["error"].to_pylist())
    assert pc.all(pc.equal(dead["topic"], topic)).as_py()
    # Replaying adds neither bronze rows nor dead letters.
    assert drain(ingest_settings, lake, run_id="r2").dead_letters == 0
    assert lake.count(BRONZE_DEAD_LETTERS.name) == 2 and lake.count(BRONZE_COST_RECORDS.name) == 6


def test_oversized_chunk_is_refused_with_a_clear_error(ingest_settings):
    settings = ingest_settings.model_copy(update={"kafka_max_message_bytes": 10_000})
    big = RawChunk("test", PayloadFormat.focus, ContentType.csv, "acct|2026-01-01", b"a,b\n" + b"1,2\n" * 5_000)
    with KafkaChunkSink(settings) as sink, pytest.raises(OversizedChunkError, match="10,000 bytes"):  # noqa: SIM117
        with sink.batch("b"):
            sink.send(parquet_chunk(1))
            sink.send(big)


def test_send_outside_a_batch_is_an_error(ingest_settings):
    with KafkaChunkSink(ingest_settings) as sink, pytest.raises(RuntimeError, match="outside a batch"):
        sink.send(parquet_chunk(1))
