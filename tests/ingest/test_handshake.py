"""The cursor handshake: a source's cursor moves only for batches bronze holds, so a broker that forgets costs a re-fetch, never data."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from backend.ingest.consumer import DrainResult, drain
from backend.ingest.handshake import commit_held, new_batch_id, send_batch
from backend.ingest.producer import BatchReceipt, KafkaChunkSink
from backend.lake import lake_from_settings
from backend.lake.catalog import BRONZE_COST_RECORDS
from backend.mart.batches import COMMITTED, batch_states
from backend.runtime import kafka as kafka_service
from tests.ingest.conftest import DaySource, days


@dataclass
class IngestReport:
    run_id: str
    batches: list[BatchReceipt] = field(default_factory=list)
    drain: DrainResult | None = None
    committed: list[str] = field(default_factory=list)
    not_in_bronze: list[str] = field(default_factory=list)


def ingest_sources(
    sources: Sequence,
    *,
    settings,
    lake,
    engine: sa.Engine,
    run_id: str,
    drain_fn: Callable[..., DrainResult] = drain,
) -> IngestReport:
    """What the pipeline's ingest and bronze steps do with these sources, through the functions they call:
    send every batch to Kafka, drain Kafka into bronze, then commit the cursors of the batches bronze holds.
    `drain_fn` stands in for the consumer (a broker that forgets, a drain that never runs)."""
    report = IngestReport(run_id=run_id)
    sent = []
    with KafkaChunkSink(settings) as sink:
        for source in sources:
            receipt = send_batch(source, sink, engine, batch_id=new_batch_id(run_id, source.name))
            report.batches.append(receipt)
            sent.append((source, receipt.batch_id))
    report.drain = drain_fn(settings, lake, run_id=run_id)
    report.committed, report.not_in_bronze = commit_held(engine, lake, sent)
    return report


def _bronze_rows(lake) -> list[tuple]:
    """Every cost row in bronze, decoded from the Parquet payloads (what silver will read)."""
    if not lake.exists(BRONZE_COST_RECORDS.name):
        return []
    payloads = lake.read_arrow(BRONZE_COST_RECORDS.name, columns=["payload"])["payload"].to_pylist()
    tables = [pq.read_table(io.BytesIO(p)) for p in payloads]
    rows = pa.concat_tables(tables).to_pylist() if tables else []
    return sorted(tuple(r.values()) for r in rows)


def test_cursor_advances_only_after_bronze(ingest_settings, lake, engine):
    source = DaySource(engine, days(3))
    report = ingest_sources([source], settings=ingest_settings, lake=lake, engine=engine, run_id="run-1")
    assert report.committed == [report.batches[0].batch_id] and not report.not_in_bronze
    assert source.done_days() == set(days(3))
    assert [b["state"] for b in batch_states(engine)] == [COMMITTED]
    assert batch_states(engine)[0]["chunk_count"] == 3
    # Nothing new to fetch: an empty batch is trivially in bronze.
    again = ingest_sources([source], settings=ingest_settings, lake=lake, engine=engine, run_id="run-2")
    assert source.fetched[-1] == [] and again.committed
    assert lake.count(BRONZE_COST_RECORDS.name) == 3


def test_batch_not_in_bronze_keeps_the_cursor(ingest_settings, lake, engine):
    source = DaySource(engine, days(2))

    def no_drain(settings, lake, *, run_id):
        return None  # the consumer never ran: bronze lacks the batch

    report = ingest_sources([source], settings=ingest_settings, lake=lake, engine=engine, run_id="r", drain_fn=no_drain)
    assert report.not_in_bronze and not report.committed
    assert source.done_days() == set()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT state FROM ops.source_batches")).scalar_one() == "sent"
    # A later drain lands it; the batch becomes in_bronze (the cursor moves with the next run's batch).
    drain(ingest_settings, lake, run_id="later")
    report = ingest_sources([source], settings=ingest_settings, lake=lake, engine=engine, run_id="r2")
    assert source.done_days() == set(days(2))


def test_failed_fetch_is_recorded_and_raised(ingest_settings, lake, engine):
    class Broken(DaySource):
        def fetch(self, batch_id):
            yield from list(super().fetch(batch_id))[:1]
            raise ConnectionError("Azure went away")

    with pytest.raises(ConnectionError):
        ingest_sources([Broken(engine, days(3))], settings=ingest_settings, lake=lake, engine=engine, run_id="r")
    assert [b["state"] for b in batch_states(engine)] == ["failed"]
    assert "Azure went away" in batch_states(engine)[0]["detail"]["error"]


@pytest.mark.slow
def test_broker_restart_between_produce_and_consume_refetches(tmp_path, ingest_settings, engine):
    port = kafka_service.free_port()
    log_path = tmp_path / "tansu.log"
    proc, address = kafka_service.spawn(log_path, port=port)
    settings = ingest_settings.model_copy(
        update={"kafka_bootstrap_servers": address, "lake_uri": str(tmp_path / "lake-restart")}
    )
    lake = lake_from_settings(settings)
    source = DaySource(engine, days(5))
    try:
        # Run 0: the first two days go through untouched (bronze then holds offsets under the old topic id).
        source.days = days(2)
        ingest_sources([source], settings=settings, lake=lake, engine=engine, run_id="run-0")
        source.days = days(5)

        def restart_then_drain(settings, lake, *, run_id):
            nonlocal proc
            kafka_service.terminate(proc.pid)  # memory storage: every message and offset is gone
            proc, _ = kafka_service.spawn(log_path, port=port)
            return drain(settings, lake, run_id=run_id)

        lost = ingest_sources(
            [source], settings=settings, lake=lake, engine=engine, run_id="run-1", drain_fn=restart_then_drain
        )
        assert lost.not_in_bronze and not lost.committed
        assert source.done_days() == set(days(2))  # the cursor did not move past what bronze holds

        refetch = ingest_sources([source], settings=settings, lake=lake, engine=engine, run_id="run-2")
        assert source.fetched[-1] == days(5)[2:]  # the next run fetched the lost days again
        assert refetch.committed and source.done_days() == set(days(5))
    finally:
        kafka_service.terminate(proc.pid)

    # Bronze holds every row an uninterrupted run delivers (silver equality: medallion tests on this bronze).
    clean_settings = ingest_settings.model_copy(update={"lake_uri": str(tmp_path / "lake-clean")})
    clean_lake = lake_from_settings(clean_settings)
    clean_source = DaySource(engine, days(5), name="clean")
    ingest_sources([clean_source], settings=clean_settings, lake=clean_lake, engine=engine, run_id="clean")
    assert _bronze_rows(lake) == _bronze_rows(clean_lake) != []
