"""Builds the process's BackgroundScheduler (SQLAlchemyJobStore in Postgres), seeds the default jobs, and edits them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from backend.auth import Principal, Role, require
from backend.mart import locks
from backend.mart.audit import record_now
from scheduler.jobs import DEFAULT_JOBS, FORMER_ALL_STEPS, RETIRED_OPTIONS, run_job

log = logging.getLogger(__name__)


# The function that actually runs the pipeline in this process; set by `start_scheduler`.
_pipeline_runner: Callable[..., Any] | None = None
_lock = threading.Lock()


@dataclass
class JobInfo:
    job_id: str
    name: str
    trigger: str
    next_run_time: datetime | None
    paused: bool


def build_scheduler(engine: sa.Engine) -> BackgroundScheduler:
    """A scheduler whose jobs persist in ops.apscheduler_jobs (on the owner engine); nothing else is queued on it."""
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename="apscheduler_jobs", tableschema="ops")},
        # Two workers: two due jobs can queue; the pipeline's advisory lock still lets only one execute at
        # a time, across processes (manual runs start through backend.pipeline.launcher instead).
        executors={"default": ThreadPoolExecutor(2)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone=UTC,
    )


def make_trigger(kind: str, args: dict[str, Any]):
    if kind == "interval":
        return IntervalTrigger(timezone=UTC, **args)
    if kind == "cron":
        return CronTrigger(timezone=UTC, **args)
    raise ValueError(f"unknown trigger kind {kind!r}: use 'interval' or 'cron'")


def ensure_default_jobs(scheduler: BackgroundScheduler) -> None:
    """Add missing default jobs; existing ones keep whatever schedule a user gave them (a full step list an
    earlier version stored becomes "every step", so steps added since then run on that schedule too, and
    options runs no longer take are dropped)."""
    for spec in DEFAULT_JOBS:
        job = scheduler.get_job(spec.job_id, jobstore="default")
        if job is not None:
            kwargs = dict(job.kwargs)
            stored = kwargs.get("steps")
            if stored and tuple(stored) in FORMER_ALL_STEPS:
                kwargs["steps"] = None
                log.info("default job %s now runs every step (it stored %s)", spec.job_id, stored)
            options = kwargs.get("options") or {}
            retired = sorted(set(options) & set(RETIRED_OPTIONS))
            if retired:
                kwargs["options"] = {k: v for k, v in options.items() if k not in retired}
                log.info("default job %s no longer passes %s", spec.job_id, retired)
            if kwargs != job.kwargs:
                scheduler.modify_job(spec.job_id, jobstore="default", kwargs=kwargs)
            continue
        steps = None if spec.steps is None else list(spec.steps)
        scheduler.add_job(
            run_job,
            trigger=make_trigger(spec.trigger, spec.trigger_args),
            id=spec.job_id,
            name=spec.name,
            kwargs={"job_id": spec.job_id, "steps": steps, "options": dict(spec.options)},
            jobstore="default",
            replace_existing=False,
        )
        log.info("added default job %s (%s %s)", spec.job_id, spec.trigger, spec.trigger_args)


class Schedules:
    """The process's scheduler, as pages and the server use it: list, edit, pause and resume the jobs (admins
    only, each change audited), and shut it down. `scheduler` is the APScheduler object underneath."""

    def __init__(self, scheduler: BackgroundScheduler, engine: sa.Engine) -> None:
        self.scheduler = scheduler
        self._engine = engine  # the owner engine: the audit trail and the job store live in the same mart

    @property
    def running(self) -> bool:
        return self.scheduler.running

    def list(self) -> list[JobInfo]:
        return [
            JobInfo(job.id, job.name, str(job.trigger), job.next_run_time, job.next_run_time is None)
            for job in self.scheduler.get_jobs(jobstore="default")
        ]

    def reschedule(self, job_id: str, *, kind: str, args: dict[str, Any], actor: Principal) -> JobInfo:
        """Change a job's trigger at runtime (admins only); persisted in Postgres, so it survives restarts."""
        require(actor, Role.admin, "Editing a schedule")
        trigger = make_trigger(kind, args)
        before = str(self.scheduler.get_job(job_id, jobstore="default").trigger)
        self.scheduler.reschedule_job(job_id, jobstore="default", trigger=trigger)
        info = next(j for j in self.list() if j.job_id == job_id)
        record_now(self._engine, actor, "schedule.edit", job_id, {"before": before, "after": info.trigger})
        return info

    def pause(self, job_id: str, *, actor: Principal) -> None:
        require(actor, Role.admin, "Pausing a schedule")
        self.scheduler.pause_job(job_id, jobstore="default")
        record_now(self._engine, actor, "schedule.pause", job_id, {})

    def resume(self, job_id: str, *, actor: Principal) -> None:
        require(actor, Role.admin, "Resuming a schedule")
        self.scheduler.resume_job(job_id, jobstore="default")
        record_now(self._engine, actor, "schedule.resume", job_id, {})

    def shutdown(self, *, wait: bool = False) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)


def start_scheduler(engine: sa.Engine, runner: Callable[..., Any], *, paused: bool = False) -> Schedules:
    """Start this process's scheduler over the mart's owner engine. `runner(steps=, trigger=, options=)` runs
    the pipeline: APScheduler stores jobs by reference to `scheduler.jobs.run_job`, which finds it here."""
    global _pipeline_runner
    with _lock:
        _pipeline_runner = runner
    scheduler = build_scheduler(engine)
    with engine.connect() as conn, locks.held(conn, locks.STARTUP):
        scheduler.start(paused=True)
        ensure_default_jobs(scheduler)
    if not paused:
        scheduler.resume()
    log.info("scheduler started with jobs %s", [j.id for j in scheduler.get_jobs()])
    return Schedules(scheduler, engine)


def run_pipeline_now(*, steps: list[str] | None, trigger: str, options: dict[str, Any]):
    with _lock:
        runner = _pipeline_runner
    if runner is None:
        raise RuntimeError("no pipeline runner registered in this process (start_scheduler was not called)")
    return runner(steps=steps, trigger=trigger, options=options)
