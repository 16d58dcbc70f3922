"""Scheduler: default jobs persist in Postgres across restarts, edits survive, a due job runs, two processes never overlap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from backend.config import REPO_ROOT
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from scheduler.jobs import DEFAULT_JOBS
from scheduler.service import start_scheduler
from tests.auth.principals import ADMIN


@pytest.fixture
def migrated(pg_url):
    upgrade(pg_url)
    return pg_url


@pytest.fixture
def owner(migrated):
    engine = owner_engine(migrated)
    yield engine
    engine.dispose()


def test_jobs_persist_and_edits_survive_restart(owner):
    scheduler = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    assert {j.job_id for j in scheduler.list()} == {spec.job_id for spec in DEFAULT_JOBS}
    scheduler.reschedule("pipeline-hourly", kind="interval", args={"minutes": 15}, actor=ADMIN)
    scheduler.pause("inbox-scan", actor=ADMIN)
    scheduler.shutdown(wait=False)

    again = start_scheduler(owner, runner=lambda **kw: None)
    jobs = {j.job_id: j for j in again.list()}
    assert len(jobs) == len(DEFAULT_JOBS)  # not duplicated
    assert "0:15:00" in jobs["pipeline-hourly"].trigger
    assert jobs["inbox-scan"].paused
    again.resume("inbox-scan", actor=ADMIN)
    assert not {j.job_id: j for j in again.list()}["inbox-scan"].paused
    again.shutdown(wait=False)


def test_a_default_job_saved_with_an_older_full_step_list_runs_every_step_after_restart(owner):
    """An install whose hourly job stored the full list of an earlier version (before `allocation`) runs every
    step of this version after a restart; the user's schedule is kept."""
    from scheduler.jobs import FORMER_ALL_STEPS

    scheduler = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    job = scheduler.scheduler.get_job("pipeline-hourly")
    assert job.kwargs["steps"] is None  # new installs: every step, whatever steps exist
    scheduler.scheduler.modify_job("pipeline-hourly", kwargs={**job.kwargs, "steps": list(FORMER_ALL_STEPS[0])})
    scheduler.reschedule("pipeline-hourly", kind="interval", args={"minutes": 20}, actor=ADMIN)
    scheduler.shutdown(wait=False)

    again = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    try:
        assert again.scheduler.get_job("pipeline-hourly").kwargs["steps"] is None
        assert "0:20:00" in {j.job_id: j for j in again.list()}["pipeline-hourly"].trigger
        assert again.scheduler.get_job("lake-maintenance").kwargs["steps"] == ["maintenance"]  # a chosen list stays
    finally:
        again.reschedule("pipeline-hourly", kind="interval", args={"hours": 1}, actor=ADMIN)
        again.shutdown(wait=False)


def test_a_default_job_saved_with_a_retired_option_drops_it_after_restart(owner):
    """The daily job of earlier versions stored `refetch_open_window`, which runs no longer take (every run
    re-pulls the open window): after a restart it runs without it instead of being refused."""
    scheduler = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    job = scheduler.scheduler.get_job("open-window-daily")
    scheduler.scheduler.modify_job("open-window-daily", kwargs={**job.kwargs, "options": {"refetch_open_window": True}})
    scheduler.shutdown(wait=False)

    again = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    try:
        assert again.scheduler.get_job("open-window-daily").kwargs["options"] == {}
    finally:
        again.shutdown(wait=False)


def test_bad_trigger_is_refused(owner):
    scheduler = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    try:
        with pytest.raises(ValueError, match="interval"):
            scheduler.reschedule("pipeline-hourly", kind="weekly", args={}, actor=ADMIN)
    finally:
        scheduler.shutdown(wait=False)


def test_a_due_job_calls_the_runner_with_its_steps(owner):
    calls = []
    schedules = start_scheduler(owner, runner=lambda **kw: calls.append(kw) or _Summary("succeeded"))
    try:
        schedules.scheduler.modify_job("lake-maintenance", next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        schedules.shutdown(wait=True)
    assert calls and calls[0]["steps"] == ["maintenance"] and calls[0]["trigger"] == "schedule:lake-maintenance"


class _Summary:
    def __init__(self, status: str) -> None:
        self.status, self.run_id, self.error = status, "x", None


_TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from backend.lake import lake_from_settings
    from backend.lake.storage import lake_location
    from backend.mart.db import owner_engine
    from backend.pipeline.runner import PipelineContext, run_pipeline
    from backend.mart.run_records import StepResult
    from backend.runtime import Endpoints
    from datetime import UTC, datetime
    from scheduler.jobs import run_job
    from scheduler.service import start_scheduler
    from tests.conftest import make_settings

    url, tmp, start_at = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    settings = make_settings(tmp, database_url=url)
    engine = owner_engine(url)

    def slow(ctx):
        time.sleep(6)  # long enough that both processes' runs surely overlap
        return StepResult(rows_out=1)

    def runner(steps, trigger, options):
        def factory(run_id):
            return PipelineContext(settings, Endpoints(url, "", lake_location(settings)), engine,
                                   lake_from_settings(settings), run_id, [])
        summary = run_pipeline(factory, steps=["slow"], registry={"slow": slow}, trigger=trigger)
        print(summary.status, flush=True)
        return summary

    schedules = start_scheduler(engine, runner)
    # Each process's scheduler has a job of its own due at the same moment (in memory, not in the shared store).
    schedules.scheduler.add_jobstore("memory", "local")
    schedules.scheduler.add_job(run_job, trigger="date", run_date=datetime.fromtimestamp(start_at, UTC),
                                id="both", kwargs={"job_id": "both"}, jobstore="local")
    time.sleep(max(0.0, start_at - time.time()) + 9)
    schedules.shutdown(wait=True)
    """
)


@pytest.mark.slow
def test_two_scheduler_processes_never_run_the_pipeline_at_once(migrated, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    start_at = str(time.time() + 10)  # both processes are up by then, even on a busy machine
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_PROCESS_SCRIPT, migrated, str(tmp_path / f"p{i}"), start_at],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        for i in range(2)
    ]
    outputs = sorted(p.communicate(timeout=120)[0].split()[-1] for p in procs)
    assert outputs == ["skipped", "succeeded"]
    engine = owner_engine(migrated)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT status FROM ops.pipeline_runs")).scalars().all()
    engine.dispose()
    assert runs == ["succeeded"]
