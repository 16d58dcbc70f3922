"""Manual pipeline runs: the one launcher the UI's buttons and the first demo load go through.

A run starts in a thread of the server process (not in a Streamlit script run), so a user can leave the
page while it goes on; the runner's advisory lock still guarantees one run at a time across processes (a
second click while a run is going returns "skipped"). The pages read progress from ops.pipeline_steps, so
scheduled runs show the same way; the events kept here add the error when a run could not start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backend.auth import Principal, require, system_principal
from backend.mart import history
from backend.mart.audit import record_now
from backend.pipeline.service import PipelineService, run_role

log = logging.getLogger(__name__)


@dataclass
class Launch:
    steps: list[str] | None
    started_at: datetime
    finished_at: datetime | None = None
    run_id: str | None = None
    status: str = "starting"  # starting / running / succeeded / failed / skipped / error
    error: str | None = None
    events: list[Any] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.finished_at is not None


class RunLauncher:
    """Starts one manual run at a time for this process and remembers the last one's outcome."""

    def __init__(self, pipeline: PipelineService) -> None:
        self._pipeline = pipeline
        self._lock = threading.Lock()
        self.current: Launch | None = None
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(
        self, *, actor: Principal, steps: Sequence[str] | None = None, options: dict[str, Any] | None = None
    ) -> Launch:
        """Start a run for `actor`; PermissionDenied (nothing started) when their role does not allow it.
        The request is audited; the run itself checks the role again (PipelineService.run)."""
        options = dict(options or {})
        role, action = run_role(steps=steps, sources=options.get("sources"))
        require(actor, role, action)
        with self._lock:
            if self.busy and self.current is not None:
                return self.current
            launch = Launch(list(steps) if steps else None, datetime.now(UTC))
            self.current = launch
            self._thread = threading.Thread(
                target=self._run, args=(launch, options, actor), name="costlake-manual-run", daemon=True
            )
            self._thread.start()
            return launch

    def wait(self, timeout: float | None = None) -> Launch | None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.current

    def _run(self, launch: Launch, options: dict[str, Any], actor: Principal) -> None:
        def progress(event: Any) -> None:
            launch.run_id = event.run_id
            launch.status = "running"
            launch.events.append(event)

        try:
            pipeline = self._pipeline
            target = ",".join(launch.steps or ["all steps"])
            if actor.kind != "system":  # the app's own first demo load is not a user's write
                record_now(pipeline.engine, actor, "run.start", target, {"options": options})
            summary = pipeline.run(
                steps=launch.steps, trigger="manual", options=options, progress=progress, actor=actor
            )
            launch.run_id, launch.status, launch.error = summary.run_id, summary.status, summary.error
        except Exception as exc:
            # The run could not even start (e.g. a missing step module): keep it for the page to show.
            log.exception("manual pipeline run could not run (steps %s)", launch.steps)
            launch.status, launch.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            launch.finished_at = datetime.now(UTC)


def first_start_demo(pipeline: PipelineService, launcher: RunLauncher) -> bool:
    """The first start of a demo install loads the demo estate at once instead of waiting for the hourly job.

    Only a served app with its scheduler does this (a headless process or test runs what it is told), and
    only while no run has succeeded yet: a restart after the first load never repeats it, and a first load
    that failed is tried again at the next start rather than leaving the app empty for an hour."""
    settings = pipeline.settings
    if not (settings.is_demo and settings.scheduler_enabled):
        return False
    try:
        ran = history.latest_run(pipeline.engine, status="succeeded") is not None
    except Exception:
        log.exception("could not check for earlier runs; the first demo load is left to the hourly job")
        return False
    if ran:
        return False
    log.info("demo mode without a successful run yet: loading the demo estate now, not in an hour")
    launcher.start(actor=system_principal("first-start"))
    return True
