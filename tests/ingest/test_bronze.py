"""Pure bronze logic: rows match the bronze contract, invalid messages become dead letters, replays are skipped."""

from __future__ import annotations

from datetime import UTC, datetime

from backend.ingest import envelope
from backend.ingest.bronze import ConsumedMessage, PartitionProgress, app_id, build_batch
from backend.lake.catalog import BRONZE_COST_RECORDS, BRONZE_DEAD_LETTERS
from tests.ingest.chunks import parquet_chunk

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _msg(offset: int, *, partition: int = 0, poison: bool = False) -> ConsumedMessage:
    key, value, headers = envelope.encode(parquet_chunk(offset, rows=4), batch_id="b", sent_at=NOW)
    if poison:
        headers = headers[:2]
    return ConsumedMessage("t", partition, offset, 1_772_000_000_000, key, value, tuple(headers))


def test_rows_follow_the_bronze_contract():
    batch = build_batch([_msg(0), _msg(1), _msg(2, poison=True)], progress={}, run_id="r", ingested_at=NOW)
    assert batch.bronze.schema == BRONZE_COST_RECORDS.schema
    assert batch.dead_letters.schema == BRONZE_DEAD_LETTERS.schema
    assert batch.bronze["offset"].to_pylist() == [0, 1]
    assert batch.bronze["ingest_date"].to_pylist() == [NOW.date()] * 2
    assert batch.bronze["payload"][0].as_py() == parquet_chunk(0, rows=4).payload
    assert batch.dead_letters["offset"].to_pylist() == [2]
    assert "missing envelope headers" in batch.dead_letters["error"][0].as_py()
    assert batch.dead_letters["raw_value"][0].as_py() == parquet_chunk(2, rows=4).payload
    assert batch.processed_through == {("t", 0): 2}
    assert batch.dead_through == {("t", 0): 2}
    assert batch.cost_rows == 8 and batch.batch_ids == {"b": 2}


def test_replay_skips_what_bronze_and_dead_letters_hold():
    # A crash after the dead-letter commit (through 3) and before the bronze commit (through 1).
    progress = {("t", 0): PartitionProgress(bronze_through=1, dead_letters_through=3)}
    messages = [_msg(0), _msg(1), _msg(2), _msg(3, poison=True), _msg(4), _msg(5, poison=True)]
    batch = build_batch(messages, progress=progress, run_id="r", ingested_at=NOW)
    assert batch.bronze["offset"].to_pylist() == [2, 4]
    assert batch.dead_letters["offset"].to_pylist() == [5]
    assert batch.skipped == 3
    assert batch.processed_through == {("t", 0): 5}


def test_start_offset_follows_bronze_not_the_group():
    assert PartitionProgress().start_offset() is None
    assert PartitionProgress(bronze_through=41).start_offset() == 42


def test_app_id_changes_with_the_topic_id():
    assert app_id("g", "t", 3, None) == "g:t:3"
    assert app_id("g", "t", 3, "abc") != app_id("g", "t", 3, "def")
