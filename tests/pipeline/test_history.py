"""Run-history readers on a real migrated Postgres, fed by the real writers: the run recorder and its log handler,
the mart loader, reconciliation and the cursor store; reads on the read-only role where the pages use it."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from backend.lake.delta import lake_from_settings
from backend.logs import current_run_id
from backend.mart import history, reconcile
from backend.mart.cursors import PostgresCursorStore
from backend.mart.load import load_gold
from backend.mart.run_records import RunLogHandler, RunRecorder, StepResult
from backend.sources.cursors import CursorRow
from tests.mart import synthetic_gold

pytestmark = pytest.mark.slow  # a fresh migrated database per test


def _run(recorder: RunRecorder, run_id: str, *, fail: bool) -> None:
    recorder.start_run(run_id, trigger="manual", steps=["ingest", "bronze", "mart"], sources=None)
    recorder.start_step(run_id, "ingest")
    recorder.finish_step(run_id, "ingest", StepResult(rows_in=5, rows_out=4, detail={"batches": 1}))
    recorder.start_step(run_id, "bronze")
    if fail:
        recorder.fail_step(run_id, "bronze", RuntimeError("broker gone"))
        recorder.skip_remaining(run_id)
        recorder.finish_run(run_id, status="failed", error="bronze: broker gone", rows_in=5, rows_out=4)
    else:
        recorder.finish_step(run_id, "bronze", StepResult(rows_in=4, rows_out=4))
        recorder.start_step(run_id, "mart")
        recorder.finish_step(run_id, "mart", StepResult(rows_in=4, rows_out=4))
        recorder.finish_run(run_id, status="succeeded", rows_in=5, rows_out=4)


def test_runs_steps_and_latest(owner, reader):
    assert history.list_runs(reader) == [] and history.latest_run(reader) is None
    recorder = RunRecorder(owner)
    _run(recorder, "run-1", fail=False)
    _run(recorder, "run-2", fail=True)
    recorder.start_run("run-3", trigger="schedule:hourly", steps=["ingest"], sources=None)

    runs = history.list_runs(reader)
    assert [r.run_id for r in runs] == ["run-3", "run-2", "run-1"]
    assert (runs[1].status, runs[1].error, runs[1].rows_in) == ("failed", "bronze: broker gone", 5)
    assert runs[0].finished_at is None and runs[0].seconds is not None and runs[0].seconds >= 0
    assert runs[2].seconds == pytest.approx((runs[2].finished_at - runs[2].started_at).total_seconds())
    assert [r.run_id for r in history.list_runs(reader, limit=1)] == ["run-3"]
    assert history.latest_run(reader).run_id == "run-3"
    assert history.latest_run(reader, status="succeeded").run_id == "run-1"
    assert history.latest_run(reader, status="abandoned") is None

    steps = history.run_steps(reader, "run-2")
    assert [(s.step, s.status) for s in steps] == [("ingest", "succeeded"), ("bronze", "failed"), ("mart", "skipped")]
    assert steps[0].detail == {"batches": 1} and steps[0].rows_out == 4
    assert "broker gone" in steps[1].error
    assert steps[2].seconds is None  # never started
    assert history.run_steps(reader, "no-such-run") == []
    with pytest.raises(ValueError, match="limit"):
        history.list_runs(reader, limit=0)


def test_run_logs_need_the_owner_and_keep_order(owner, reader):
    RunRecorder(owner).start_run("run-logs", trigger="manual", steps=["ingest"], sources=None)
    handler = RunLogHandler(owner, "run-logs")
    logger = logging.getLogger("tests.history")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = current_run_id.set("run-logs")
    try:
        for i in range(5):
            logger.info("line %d", i)
    finally:
        current_run_id.reset(token)
        logger.removeHandler(handler)
    handler.flush()

    lines = history.run_logs(owner, "run-logs")
    assert [line.message for line in lines] == [f"line {i}" for i in range(5)]
    assert {line.level for line in lines} == {"INFO"} and lines[0].logger == "tests.history"
    assert [line.message for line in history.run_logs(owner, "run-logs", limit=2)] == ["line 0", "line 1"]
    assert history.run_logs(owner, "other") == []
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        history.run_logs(reader, "run-logs")


def test_load_history_and_reconciliation(mart_settings, owner, reader):
    assert history.load_history(reader) == [] and history.latest_reconciliation(reader) is None
    lake = lake_from_settings(mart_settings)
    daily = synthetic_gold.gold_cost_daily(start=dt.date(2026, 1, 30), days=4, rows_per_day=10, resources=20)
    synthetic_gold.write_gold(lake, daily)
    load_gold(mart_settings, lake, run_id="load-1")
    load_gold(mart_settings, lake, run_id="load-2")

    loads = history.load_history(reader)
    assert [(r.run_id, r.status) for r in loads] == [("load-2", "succeeded"), ("load-1", "succeeded")]
    assert sorted(loads[1].months) == ["2026-01", "2026-02"] and loads[1].rows_loaded == 40
    assert len(history.load_history(reader, limit=1)) == 1

    # Silver agrees on three days and is short by one unit on the fourth: one mismatch.
    frame = daily.to_pandas().groupby(["charge_date", "source", "billing_currency"])["actual_cost"].sum()
    totals = [(d, s, c, t - (Decimal(1) if d == dt.date(2026, 2, 2) else 0)) for (d, s, c), t in frame.items()]
    silver = pa.table(dict(zip(reconcile.SILVER_TOTALS_SCHEMA.names, zip(*totals, strict=True), strict=True)))
    reconcile.reconcile(owner, silver_totals=silver, run_id="load-2")

    check = history.latest_reconciliation(reader)
    assert (check.run_id, check.days_checked, check.mismatches) == ("load-2", 4, 1)
    assert check.tolerance == pytest.approx(0.01)
    second = reconcile.reconcile(owner, silver_totals=silver, run_id="load-3")
    assert history.latest_reconciliation(reader).check_id == second.check_id


def test_cursor_summary(mart_settings, owner):
    assert history.cursor_summary(owner) == []
    store = PostgresCursorStore(owner)
    fetched = dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
    rows = [CursorRow("azure", "sub-1", "ActualCost", dt.date(2026, 1, d), fetched, 10) for d in (3, 1, 2)]
    rows.append(CursorRow("file", "sha-1", "file", dt.date(2026, 1, 5), fetched + dt.timedelta(hours=1)))
    store.stage("b-1", "azure", rows, chunk_count=1)
    store.commit("b-1")
    summary = history.cursor_summary(owner)
    assert [(c.source, c.scope, c.first_day, c.last_day, c.days) for c in summary] == [
        ("azure", "sub-1", dt.date(2026, 1, 1), dt.date(2026, 1, 3), 3),
        ("file", "sha-1", dt.date(2026, 1, 5), dt.date(2026, 1, 5), 1),
    ]
    assert summary[1].fetched_at == fetched + dt.timedelta(hours=1)
