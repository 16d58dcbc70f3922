"""Runs the pipeline over a process's Resources: builds each run's context and hands the runner the step registry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from backend.auth import SCHEDULER, Principal, Role, require
from backend.config import Settings
from backend.lake import Lake
from backend.pipeline.runner import PipelineContext, ProgressCallback, RunOptions, RunSummary, run_pipeline
from backend.pipeline.sources import default_sources
from backend.resources import Resources
from backend.runtime import Endpoints, Runtime

log = logging.getLogger(__name__)


def run_role(*, steps: Sequence[str] | None, sources: Sequence[str] | None) -> tuple[Role, str]:
    """The role a run needs and how to name it: importing what is waiting in the inbox is the end of an
    upload (editor); every other run, and removing the demo, is an admin's."""
    if steps and "remove_demo" in steps:
        return Role.admin, "Removing the demo data"
    if sources and list(sources) == ["inbox"]:
        return Role.editor, "Importing the inbox"
    return Role.admin, "Running the pipeline"


class PipelineService:
    """One per process, over its Resources: `run()` is what the CLI, the scheduler and the launcher call."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    # The pieces a caller of the service reaches for, named as the steps name them.
    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def endpoints(self) -> Endpoints:
        return self.resources.endpoints

    @property
    def engine(self) -> sa.Engine:
        return self.resources.owner

    @property
    def lake(self) -> Lake:
        return self.resources.lake

    @property
    def runtime(self) -> Runtime:
        return self.resources.runtime

    @property
    def steps(self) -> list[str]:
        """Every step, in the order a full run takes them."""
        from backend.pipeline.steps import ALL_STEPS

        return list(ALL_STEPS)

    def default_sources(self) -> list[str]:
        return default_sources(self.settings)

    def run(
        self,
        *,
        steps: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        trigger: str = "manual",
        options: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        actor: Principal = SCHEDULER,
    ) -> RunSummary:
        """One run. `actor` is who asked: the scheduler's jobs and the CLI run as the system; the app passes
        its signed-in user, whose role must allow the run (PermissionDenied otherwise, nothing started)."""
        from backend.pipeline.steps import ALL_STEPS, REGISTRY

        options = dict(options or {})
        chosen_sources = list(sources or options.pop("sources", None) or self.default_sources())
        run_options = RunOptions.of(options)  # before anything starts: a bad option is the caller's error
        role, action = run_role(steps=steps, sources=chosen_sources)
        require(actor, role, action)

        def factory(run_id: str) -> PipelineContext:
            ctx = PipelineContext(self.settings, self.endpoints, self.engine, self.lake, run_id, chosen_sources)
            ctx.state.options = run_options
            return ctx

        return run_pipeline(
            factory,
            steps=list(steps or ALL_STEPS),
            registry=REGISTRY,
            trigger=trigger,
            progress=progress,
        )

    def stop(self) -> None:
        """The process is stopping: a running run stops before its next step, and its Spark work is cancelled
        now (the run is recorded as failed; every step is idempotent, so nothing is lost)."""
        from backend.pipeline.runner import request_stop
        from backend.runtime.spark import stop_spark

        request_stop()
        stop_spark()

    def close(self) -> None:
        """Release the engines and the servers (the CLI and tests; the served app stops with its process)."""
        self.resources.close()
