"""Server-process services started before Streamlit serves anything, so scheduled runs happen without a browser."""

from __future__ import annotations

import atexit
import logging
import threading

import sqlalchemy as sa

from backend.config import Settings
from backend.runtime import Runtime

log = logging.getLogger(__name__)

# Set by `start()` when the app is launched through `python -m app.serve`; app.context hands these out
# instead of building its own, so the UI and the scheduler share one runtime per process.
runtime: Runtime | None = None
pipeline = None
scheduler = None
_lock = threading.Lock()


# Every module a pipeline step imports, loaded in the main thread before the scheduler's worker threads
# start: two threads importing the same heavy packages for the first time can deadlock-detect and see
# a half-initialised module (seen with pandas/plotly when Streamlit started alongside the first run).
_PRELOAD = (
    "pandas",
    "pyarrow",
    "deltalake",
    "plotly.graph_objects",
    "pyspark.sql",
    "kafka",
    "backend.ingest.handshake",
    "backend.ingest.consumer",
    "backend.demo.estate",
    "backend.sources.files",
    "backend.sources.cursors",
    "backend.medallion.refine",
    "backend.mart.load",
    "backend.mart.reconcile",
    "backend.analytics.run",
    "backend.analytics.budgets",
    "backend.pipeline.steps",
)


def _preload() -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)


def start(settings: Settings) -> None:
    """Start the runtime, migrate the mart, start the scheduler; queue the first demo load on a fresh install."""
    global runtime, pipeline, scheduler
    with _lock:
        if runtime is not None:
            return
        from backend.pipeline.service import PipelineService

        _preload()  # before the Spark warm-up thread and the scheduler's workers start importing
        runtime = Runtime(settings)
        runtime.start(spark=True)
        pipeline = PipelineService(runtime)
        _start_metrics(pipeline)
        if not settings.scheduler_enabled:
            return
        from backend.auth import system_principal
        from scheduler.service import run_now, start_scheduler

        scheduler = start_scheduler(pipeline.endpoints.database_url, pipeline.run)
        atexit.register(lambda: scheduler.shutdown(wait=False) if scheduler.running else None)
        if settings.is_demo and not _any_successful_run(pipeline.engine):
            log.info("demo mode without a successful run yet: queueing the demo estate load now, not in an hour")
            run_now(scheduler, actor=system_principal("first-start"))


def _start_metrics(pipeline) -> None:
    # With the pipeline, not the scheduler: the endpoint exists whenever this process can run the pipeline.
    # A port already taken must not stop the app from serving: logged, the app runs without metrics.
    from backend.metrics.server import start_for

    try:
        start_for(pipeline)
    except OSError:
        log.exception("metrics endpoint not started (METRICS_PORT=%s)", pipeline.settings.metrics_port)


def _any_successful_run(engine: sa.Engine) -> bool:
    from backend.mart import history

    return history.latest_run(engine, status="succeeded") is not None


def shutdown() -> None:
    """The server is stopping: no new runs; a running one stops at its next step, and its Spark work is
    cancelled now so Ctrl-C does not wait minutes for a job (the run is recorded as failed, nothing is lost)."""
    from backend.metrics.server import stop_metrics
    from backend.pipeline.runner import request_stop
    from backend.runtime.spark import stop_spark

    request_stop()
    if scheduler is not None and scheduler.running:
        scheduler.shutdown(wait=False)
    stop_metrics()
    stop_spark()
