"""SIGKILL the consumer between the bronze commit and the Kafka commit: a restart adds nothing twice and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import TopicPartition

from backend.ingest.clients import make_consumer
from backend.ingest.consumer import drain
from backend.ingest.producer import KafkaChunkSink
from backend.lake.catalog import BRONZE_COST_RECORDS
from tests.ingest.chunks import parquet_chunk

REPO = Path(__file__).resolve().parents[2]
N = 25


@pytest.mark.slow
def test_sigkill_after_bronze_write_before_commit(ingest_settings, lake):
    with KafkaChunkSink(ingest_settings) as sink, sink.batch("b-1"):
        for i in range(N):
            sink.send(parquet_chunk(i))
    config = {
        "data_dir": str(ingest_settings.data_dir),
        "kafka_bootstrap_servers": ingest_settings.kafka_bootstrap_servers,
        "kafka_topic_costs": ingest_settings.kafka_topic_costs,
        "kafka_topic_partitions": ingest_settings.kafka_topic_partitions,
        "lake_uri": ingest_settings.lake_uri,
    }
    child = subprocess.run(
        [sys.executable, "-m", "tests.ingest.crash_consumer", json.dumps(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    landed = lake.count(BRONZE_COST_RECORDS.name)
    assert 0 < landed < N  # the first commit (up to 10 messages) is in bronze ...
    consumer = make_consumer(ingest_settings)
    tps = [TopicPartition(ingest_settings.kafka_topic_costs, p) for p in range(3)]
    assert all(consumer.committed(tp) is None for tp in tps)  # ... and no Kafka offset was committed
    consumer.close(autocommit=False)

    result = drain(ingest_settings, lake, run_id="restart")
    assert result.bronze_rows == N - landed
    table = lake.read_arrow(BRONZE_COST_RECORDS.name, columns=["topic", "partition", "offset", "payload"])
    coords = list(
        zip(table["topic"].to_pylist(), table["partition"].to_pylist(), table["offset"].to_pylist(), strict=True)
    )
    assert len(coords) == len(set(coords)) == N
    assert sorted(table["payload"].to_pylist()) == sorted(parquet_chunk(i).payload for i in range(N))
