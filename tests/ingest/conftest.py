"""Fixtures for ingest tests: settings on a per-test topic with migrated ops tables, and a small CostSource with a real cursor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from backend.config import Settings
from backend.lake import Lake, lake_from_settings
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from backend.sources.base import RawChunk
from tests.ingest.chunks import parquet_chunk


@pytest.fixture
def ingest_settings(settings: Settings, kafka_topic: str) -> Settings:
    return settings.model_copy(update={"kafka_topic_costs": kafka_topic, "kafka_topic_partitions": 3})


@pytest.fixture
def lake(ingest_settings: Settings) -> Lake:
    return lake_from_settings(ingest_settings)


@pytest.fixture
def engine(ingest_settings: Settings) -> Iterator[sa.Engine]:
    upgrade(ingest_settings.database_url)
    eng = owner_engine(ingest_settings.database_url, poolclass=sa.pool.NullPool)
    yield eng
    eng.dispose()


class DaySource:
    """A CostSource over fixed days with its cursor in ops.source_cursors: fetch yields the days the
    cursor lacks (one Parquet chunk per day), commit records them."""

    metric = "FocusCost"

    def __init__(self, engine: sa.Engine, days: list[date], *, name: str = "testsrc", rows: int = 4) -> None:
        self.engine = engine
        self.days = days
        self.name = name
        self.rows = rows
        self.pending: dict[str, list[date]] = {}
        self.fetched: list[list[date]] = []

    def done_days(self) -> set[date]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT day FROM ops.source_cursors WHERE source = :s AND scope = 'acct-1'"), {"s": self.name}
            )
            return {r.day for r in rows}

    def fetch(self, batch_id: str) -> Iterator[RawChunk]:
        todo = [d for d in self.days if d not in self.done_days()]
        self.pending[batch_id] = todo
        self.fetched.append(todo)
        for day in todo:
            yield parquet_chunk((day - date(2026, 1, 1)).days, rows=self.rows, source=self.name)

    def commit(self, batch_id: str) -> None:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for day in self.pending.pop(batch_id):
                conn.execute(
                    sa.text(
                        "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at, row_count) "
                        "VALUES (:s, 'acct-1', :m, :d, :b, :f, :n) ON CONFLICT (source, scope, metric, day, currency) "
                        "DO UPDATE SET batch_id = EXCLUDED.batch_id, fetched_at = EXCLUDED.fetched_at"
                    ),
                    {"s": self.name, "m": self.metric, "d": day, "b": batch_id, "f": now, "n": self.rows},
                )


def days(n: int, start: int = 0) -> list[date]:
    return [date(2026, 1, 1) + timedelta(days=start + i) for i in range(n)]
