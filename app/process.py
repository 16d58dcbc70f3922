"""The served app's composition: one Server per process (resources, pipeline, launcher, scheduler, metrics).

`python -m app.serve` starts it before Streamlit serves anything, so scheduled runs happen without a
browser; `streamlit run app/main.py` starts it on the first page view through app.context. Both go through
`start`, so the first demo load and everything else happen the same way whichever way the app was launched.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backend.config import Settings
from backend.pipeline.launcher import RunLauncher, first_start_demo
from backend.pipeline.service import PipelineService
from backend.resources import Resources, open_resources
from backend.runtime import Runtime
from scheduler.service import Schedules, start_scheduler

if TYPE_CHECKING:  # the agent's packages (LangChain) load with the first question, not with the server
    from backend.agent.agent import CostAgent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """What the pages and the server's threads share; built once per process by `start`."""

    resources: Resources
    pipeline: PipelineService
    launcher: RunLauncher  # manual runs (the pages' buttons, the first demo load)
    schedules: Schedules | None  # None with SCHEDULER_ENABLED=false
    _agent: list[CostAgent] = field(default_factory=list, repr=False)  # built on the first question
    _agent_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def agent(self) -> CostAgent:
        """The cost agent over the process's reader and owner engines, built on first use (most sessions
        never open the chat) and then shared by every session."""
        with self._agent_lock:
            if not self._agent:
                from backend.agent.agent import build_agent

                r = self.resources
                self._agent.append(build_agent(r.settings, reader=r.reader, auditor=r.owner))
            return self._agent[0]


_server: Server | None = None
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


def started() -> bool:
    """Whether this process's Server exists (`python -m app.serve` starts it before any page)."""
    return _server is not None


def build(settings: Settings, *, spark: bool = True) -> Server:
    """Resources, the pipeline over them, the launcher, and the scheduler when enabled (tests build their own)."""
    resources = open_resources(Runtime(settings), spark=spark)
    pipeline = PipelineService(resources)
    schedules = None
    if settings.scheduler_enabled:
        schedules = start_scheduler(resources.owner, pipeline.run)
    return Server(resources, pipeline, RunLauncher(pipeline), schedules)


def start(settings: Settings) -> Server:
    """This process's Server: built, with the metrics endpoint and the first demo load, on the first call."""
    global _server
    with _lock:
        if _server is not None:
            return _server
        for name in _PRELOAD:  # before the Spark warm-up thread and the scheduler's workers start importing
            importlib.import_module(name)
        server = build(settings)
        log.info("costlake started: %s", {k: round(v, 2) for k, v in server.resources.runtime.startup_seconds.items()})
        _start_metrics(server.resources)
        if server.schedules is not None:
            # Streamlit stops with SIGTERM/SIGINT and then runs atexit: a running job finishes its step.
            atexit.register(server.schedules.shutdown)
        first_start_demo(server.pipeline, server.launcher)
        _server = server
        return server


def _start_metrics(resources: Resources) -> None:
    # With the pipeline, not the scheduler: the endpoint exists whenever this process can run the pipeline.
    # A port already taken must not stop the app from serving: logged, the app runs without metrics.
    from backend.metrics.server import start_for

    try:
        start_for(resources)
    except OSError:
        log.exception("metrics endpoint not started (METRICS_PORT=%s)", resources.settings.metrics_port)


def shutdown() -> None:
    """The server is stopping: no new runs; a running one stops at its next step, and its Spark work is
    cancelled now so Ctrl-C does not wait minutes for a job (the run is recorded as failed, nothing is lost)."""
    from backend.metrics.server import stop_metrics

    server = _server
    if server is None:
        return
    if server.schedules is not None:
        server.schedules.shutdown()
    stop_metrics()
    server.pipeline.stop()
