"""Progress marks: gold and the mart find the months a killed run left behind from the upstream Delta log."""

from __future__ import annotations

import pyarrow as pa
import pytest
import sqlalchemy as sa

from backend.lake import lake_from_settings
from backend.mart import progress
from backend.mart.db import owner_engine
from tests.conftest import make_settings

TABLE = "silver/probe"


@pytest.fixture
def lake(tmp_path):
    return lake_from_settings(make_settings(tmp_path))


def test_no_upstream_table_means_nothing_pending(owner, lake):
    assert progress.pending_months(owner, lake, stage="gold", upstream_table=TABLE, column="m") == (set(), None)


def test_pending_months_follow_the_mark(owner, lake):
    lake.append(TABLE, pa.table({"m": ["2026-01", "2026-02"], "x": [1, 2]}), partition_by=["m"])
    # No mark yet: everything is pending.
    pending, version = progress.pending_months(owner, lake, stage="gold", upstream_table=TABLE, column="m")
    assert pending is progress.ALL
    progress.record(owner, "gold", TABLE, version, run_id="r1")
    assert progress.pending_months(owner, lake, stage="gold", upstream_table=TABLE, column="m")[0] == set()

    # A run commits upstream and dies before the stage: the next run finds the month it changed.
    lake.append(TABLE, pa.table({"m": ["2026-02"], "x": [5]}), partition_by=["m"])
    pending, version = progress.pending_months(owner, lake, stage="gold", upstream_table=TABLE, column="m")
    assert pending == {"2026-02"}
    assert progress.merge_months(["2026-03"], pending) == ["2026-02", "2026-03"]
    assert progress.merge_months(None, pending) is None
    assert progress.merge_months(["2026-03"], None) is None

    progress.record(owner, "gold", TABLE, version, run_id="r2")
    assert progress.pending_months(owner, lake, stage="gold", upstream_table=TABLE, column="m")[0] == set()
    # Marks are per stage and per upstream table.
    assert progress.pending_months(owner, lake, stage="mart", upstream_table=TABLE, column="m")[0] is None
    assert progress.recorded_version(owner, "gold", "silver/other") is None


def test_cursor_advances_when_another_process_commits_after_the_handshake(owner, mart_url):
    """The handshake records Kafka's receipt in the batch's `detail`; the cursor rows staged there by the
    fetch must survive it, so a commit from a process that did not fetch still advances the cursor."""
    from datetime import UTC, date, datetime

    from backend.mart.batches import SENT
    from backend.mart.batches import record as _record
    from backend.mart.cursors import PostgresCursorStore
    from backend.sources.cursors import CursorRow

    # Two processes: each store on an engine of its own.
    engines = [owner_engine(mart_url), owner_engine(mart_url)]
    fetcher, committer = (PostgresCursorStore(e) for e in engines)
    try:
        day = date(2026, 10, 1)
        row = CursorRow("azure", "sub-1", "ActualCost", day, datetime(2026, 10, 2, tzinfo=UTC), 3)
        fetcher.stage("b1", "azure", [row], chunk_count=1)
        _record(owner, "b1", "azure", SENT, 1, {"topic": "t", "last_offsets": {"0": 7}})
        assert committer.commit("b1") == 1
        assert committer.delivered("azure") == {("sub-1", "ActualCost", day)}
        with owner.connect() as conn:
            detail = conn.execute(sa.text("SELECT detail FROM ops.source_batches WHERE batch_id = 'b1'")).scalar_one()
        assert detail["topic"] == "t" and detail["cursor_rows"]
    finally:
        for engine in engines:
            engine.dispose()
