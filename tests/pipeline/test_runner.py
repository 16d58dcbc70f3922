"""The runner records every run and step, fails on a failing step, skips when locked, and abandons dead runs."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from backend.lake import lake_from_settings
from backend.lake.storage import lake_location
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from backend.mart.run_records import RunRecorder, StepResult
from backend.pipeline.runner import PIPELINE_LOCK_KEY, PipelineContext, run_pipeline
from backend.runtime import Endpoints
from tests.conftest import make_settings

log = logging.getLogger("tests.pipeline")


@pytest.fixture
def engine(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def ctx_factory(tmp_path, pg_url, engine):
    settings = make_settings(tmp_path, database_url=pg_url)

    def factory(run_id: str) -> PipelineContext:
        endpoints = Endpoints(pg_url, "", lake_location(settings))
        return PipelineContext(settings, endpoints, engine, lake_from_settings(settings), run_id, ["demo"])

    return factory


def _ok(ctx: PipelineContext) -> StepResult:
    log.info("step ok ran for %s", ctx.run_id)
    return StepResult(rows_in=10, rows_out=7, detail={"note": "fine"})


def _boom(ctx: PipelineContext) -> StepResult:
    raise RuntimeError("source unreachable: check AZURE_TENANT_ID")


def test_successful_run_records_steps_and_logs(engine, ctx_factory, caplog):
    caplog.set_level(logging.INFO)
    events = []
    summary = run_pipeline(
        ctx_factory, steps=["a", "b"], registry={"a": _ok, "b": _ok}, trigger="test", progress=events.append
    )
    assert summary.status == "succeeded"
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT status, rows_in, rows_out FROM ops.pipeline_runs")).one()
        steps = conn.execute(sa.text("SELECT step, status, rows_out FROM ops.pipeline_steps ORDER BY ordinal")).all()
        logs = conn.execute(sa.text("SELECT message FROM ops.pipeline_logs WHERE run_id = :r"), {"r": summary.run_id})
        messages = [m for (m,) in logs]
    assert tuple(run) == ("succeeded", 10, 7)
    assert [tuple(s) for s in steps] == [("a", "succeeded", 7), ("b", "succeeded", 7)]
    assert any("step ok ran" in m for m in messages)
    assert [e.status for e in events] == ["running", "succeeded", "running", "succeeded"]
    assert events[-1].fraction == 1.0


def test_failing_step_fails_the_run_with_its_error(engine, ctx_factory):
    summary = run_pipeline(
        ctx_factory, steps=["a", "boom", "c"], registry={"a": _ok, "boom": _boom, "c": _ok}, trigger="test"
    )
    assert summary.status == "failed" and "source unreachable" in summary.error
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT status, error FROM ops.pipeline_runs")).one()
        steps = dict(conn.execute(sa.text("SELECT step, status FROM ops.pipeline_steps")).all())
        tb = conn.execute(sa.text("SELECT traceback FROM ops.pipeline_steps WHERE step = 'boom'")).scalar()
    assert run.status == "failed" and "AZURE_TENANT_ID" in run.error
    assert steps == {"a": "succeeded", "boom": "failed", "c": "skipped"}
    assert "RuntimeError" in tb


def test_unknown_step_is_refused(ctx_factory):
    with pytest.raises(ValueError, match="known steps"):
        run_pipeline(ctx_factory, steps=["nope"], registry={"a": _ok}, trigger="test")


def test_second_process_is_skipped_while_locked(engine, ctx_factory):
    with engine.connect() as other:
        assert other.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PIPELINE_LOCK_KEY}).scalar()
        summary = run_pipeline(ctx_factory, steps=["a"], registry={"a": _ok}, trigger="test")
        other.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PIPELINE_LOCK_KEY})
    assert summary.status == "skipped"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ops.pipeline_runs")).scalar() == 0


def test_dead_running_run_is_marked_abandoned(engine, ctx_factory):
    recorder = RunRecorder(engine)
    recorder.start_run("dead-run", trigger="test", steps=["a", "b"], sources=None)
    recorder.start_step("dead-run", "a")
    with engine.begin() as conn:  # a pid that cannot exist
        conn.execute(sa.text("UPDATE ops.pipeline_runs SET pid = 2147483000 WHERE run_id = 'dead-run'"))
    run_pipeline(ctx_factory, steps=["a"], registry={"a": _ok}, trigger="test")
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM ops.pipeline_runs WHERE run_id = 'dead-run'")).scalar()
        steps = dict(conn.execute(sa.text("SELECT step, status FROM ops.pipeline_steps WHERE run_id='dead-run'")).all())
    assert status == "abandoned"
    assert steps == {"a": "abandoned", "b": "abandoned"}
