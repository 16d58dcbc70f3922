"""Runs named pipeline steps in order under a Postgres advisory lock, recording the run, its steps and its logs."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from backend.config import Settings
from backend.lake import Lake
from backend.logs import current_run_id
from backend.mart import locks
from backend.mart.run_records import (
    FAILED,
    SKIPPED,
    SUCCEEDED,
    RunLogHandler,
    RunRecorder,
    StepResult,
)
from backend.runtime import Endpoints

if TYPE_CHECKING:  # the types only: importing them would load the demo and the engine with every run
    from backend.demo.estate import Estate
    from backend.medallion.refine import MedallionStats
    from backend.sources.base import CostSource

log = logging.getLogger(__name__)

# One lock for every pipeline run: steps share tables, so two runs (two app replicas, or the app and
# the CLI) must never interleave.
PIPELINE_LOCK_KEY = locks.PIPELINE


@dataclass(frozen=True)
class ProgressEvent:
    run_id: str
    step: str
    status: str  # running / succeeded / failed
    index: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        done = self.index + (1 if self.status != "running" else 0)
        return min(1.0, done / self.total) if self.total else 1.0


ProgressCallback = Callable[[ProgressEvent], None]

# Set when the hosting process shuts down: a run stops before its next step instead of holding the
# process open for minutes (what it already wrote is safe: every step is idempotent).
_stop_requested = threading.Event()


class RunCancelledError(RuntimeError):
    """The process is shutting down; the run stopped between steps."""


def request_stop() -> None:
    _stop_requested.set()


@dataclass(frozen=True)
class RunOptions:
    """What a caller may ask of one run beyond its steps and sources, typed; an unknown option is refused."""

    files: tuple[str, ...] = ()  # the files source: the paths to import (a folder is one export delivery)
    full_rebuild: bool = False  # silver and gold recomputed from the whole of bronze

    @classmethod
    def of(cls, options: Mapping[str, Any] | None) -> RunOptions:
        """The options callers pass as a plain mapping (the CLI, the scheduler's stored jobs, the pages)."""
        given = dict(options or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"unknown run option(s) {', '.join(unknown)}: a run takes {', '.join(known)}")
        files = given.get("files") or ()
        if isinstance(files, str):
            raise ValueError("run option files must be a list of paths, not one string")
        return cls(files=tuple(str(p) for p in files), full_rebuild=bool(given.get("full_rebuild", False)))


@dataclass
class RunState:
    """What one run's steps hand each other, by name and type: each field says which step sets it.

    A step run on its own finds the defaults (e.g. `affected_months` None: gold and the mart then do
    every month), which is what "run gold" or "run mart" from the UI means."""

    options: RunOptions = field(default_factory=RunOptions)  # the caller's (files to import, full_rebuild)
    demo_estate: Estate | None = None  # ingest: the demo estate, generated once ("demo" and the demo tenant share it)
    demo_skipped: bool = False  # ingest: a real source delivered, so the demo source was not loaded
    skipped_sources: list[dict[str, str]] = field(default_factory=list)  # ingest: sources not configured
    fx_files: list[Path] = field(default_factory=list)  # ingest: FX rates files found among the imports
    sent: list[tuple[CostSource, str]] = field(default_factory=list)  # ingest: (source, batch id); bronze empties it
    silver_version_before: int | None = None  # silver: silver's Delta version before this run wrote
    affected_months: list[str] | None = None  # silver, then gold: the months to refine / load (None: all)
    medallion: MedallionStats | None = None  # silver: its stats (touched days, for gold's day-level increment)
    gold_version_before: int | None = None  # gold: gold cost_daily's Delta version before this run wrote
    gold_days: dict[str, list[str]] | None = None  # gold: months it rewrote only some days of, and those days


@dataclass
class PipelineContext:
    """What a step gets: settings, resolved endpoints, the owner engine, the lake, and the run's state."""

    settings: Settings
    endpoints: Endpoints
    engine: sa.Engine
    lake: Lake
    run_id: str
    sources: list[str]
    state: RunState = field(default_factory=RunState)

    @cached_property
    def spark(self):
        from backend.runtime.spark import get_spark

        return get_spark(self.settings)

    @cached_property
    def cursors(self):
        """The run's source cursor store, over the owner engine (a test assigns its own)."""
        from backend.mart.cursors import PostgresCursorStore

        return PostgresCursorStore(self.engine)


Step = Callable[[PipelineContext], StepResult]


@dataclass
class RunSummary:
    run_id: str
    status: str
    steps: dict[str, StepResult] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def run_pipeline(
    ctx_factory: Callable[[str], PipelineContext],
    *,
    steps: Sequence[str],
    registry: dict[str, Step],
    trigger: str,
    progress: ProgressCallback | None = None,
    run_id: str | None = None,
) -> RunSummary:
    """Run `steps` in order. A failing step fails the run (and skips the rest); nothing is swallowed.

    Returns status "skipped" without recording a run when another process holds the pipeline lock.
    """
    unknown = [s for s in steps if s not in registry]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; known steps: {list(registry)}")
    run_id = run_id or new_run_id()
    ctx = ctx_factory(run_id)
    recorder = RunRecorder(ctx.engine)
    t0 = time.monotonic()
    with ctx.engine.connect() as lock_conn:
        if not locks.try_lock(lock_conn, PIPELINE_LOCK_KEY):
            log.info("pipeline already running in another process; %s run skipped", trigger)
            return RunSummary(run_id, SKIPPED, error="another pipeline run holds the lock")
        try:
            # Holding the lock means no other run is alive: anything still 'running' died mid-way.
            abandoned = recorder.abandon_dead_runs()
            return _run_locked(ctx, recorder, steps, registry, trigger, progress, t0, abandoned=abandoned)
        finally:
            locks.unlock(lock_conn, PIPELINE_LOCK_KEY)


def _run_locked(
    ctx: PipelineContext,
    recorder: RunRecorder,
    steps: Sequence[str],
    registry: dict[str, Step],
    trigger: str,
    progress: ProgressCallback | None,
    t0: float,
    *,
    abandoned: Sequence[str] = (),
) -> RunSummary:
    run_id = ctx.run_id
    token = current_run_id.set(run_id)
    handler = RunLogHandler(ctx.engine, run_id)
    logging.getLogger().addHandler(handler)
    summary = RunSummary(run_id, SUCCEEDED)
    recorder.start_run(run_id, trigger=trigger, steps=list(steps), sources=ctx.sources)
    log.info("run %s started (%s): steps %s, sources %s", run_id, trigger, list(steps), ctx.sources)
    # Deliveries that failed at earlier runs are retried first (in this run's log), with news of abandoned runs.
    _notifications("before_run", ctx, abandoned=list(abandoned))
    try:
        for index, step in enumerate(steps):
            _notify(progress, ProgressEvent(run_id, step, "running", index, len(steps)))
            recorder.start_step(run_id, step)
            step_t0 = time.monotonic()
            try:
                if _stop_requested.is_set():
                    raise RunCancelledError("the app is shutting down; the next run picks up from here")
                result = registry[step](ctx) or StepResult()
            except Exception as exc:
                log.exception("step %s failed", step)
                recorder.fail_step(run_id, step, exc)
                recorder.skip_remaining(run_id)
                summary.status, summary.error = FAILED, f"{step}: {type(exc).__name__}: {exc}"
                _notify(progress, ProgressEvent(run_id, step, "failed", index, len(steps), str(exc)))
                break
            result.detail.setdefault("seconds", round(time.monotonic() - step_t0, 3))
            recorder.finish_step(run_id, step, result)
            summary.steps[step] = result
            log.info(
                "step %s done in %.1fs (rows in %s, out %s)",
                step,
                time.monotonic() - step_t0,
                result.rows_in,
                result.rows_out,
            )
            _notify(progress, ProgressEvent(run_id, step, "succeeded", index, len(steps)))
            handler.flush()
            _release_memory()
    finally:
        summary.seconds = time.monotonic() - t0
        first = next(iter(summary.steps.values()), None)
        last = next(reversed(summary.steps.values()), None) if summary.steps else None
        recorder.finish_run(
            run_id,
            status=summary.status,
            error=summary.error,
            rows_in=first.rows_in if first else None,
            rows_out=last.rows_out if last else None,
        )
        log.info("run %s %s in %.1fs", run_id, summary.status, summary.seconds)
        # After the run's row is final, so its outcome never depends on a receiver; logged with the run.
        _notifications("after_run", ctx, run_id=run_id, status=summary.status)
        handler.flush()
        logging.getLogger().removeHandler(handler)
        current_run_id.reset(token)
    return summary


def _release_memory() -> None:
    """Hand back to the OS what a step freed. Arrow's allocator (pyarrow's and the engine's decoding in this
    process) keeps freed pages until it happens to purge: a 5M-row demo estate's 1.6 GB stayed resident
    through every later step, on top of what they needed."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def _notifications(hook: str, ctx: PipelineContext, **kwargs: Any) -> None:
    """backend.notify.hooks' `hook`; whatever happens there is logged and never changes the run."""
    try:
        from backend.notify import hooks

        getattr(hooks, hook)(ctx.engine, ctx.settings, **kwargs)
    except Exception:
        log.exception("notifications (%s) failed; the run is not affected", hook)


def _notify(progress: ProgressCallback | None, event: ProgressEvent) -> None:
    if progress is None:
        return
    try:
        progress(event)
    except Exception:
        # A broken progress display must not fail the pipeline; it is logged, not hidden.
        log.exception("progress callback failed for %s", event)
