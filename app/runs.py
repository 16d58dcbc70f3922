"""Manual pipeline runs from the UI: one background thread per run, live progress kept for the pipeline page.

Runs start in a thread of the server process (not in the script run), so a user can leave the page
while the run goes on; the runner's advisory lock still guarantees one run at a time across processes
(a second click while a run is going returns "skipped"). The pages read progress from ops.pipeline_steps,
so scheduled runs show the same way; the events kept here add the error when a run could not start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    def __init__(self, pipeline_factory: Callable[[], Any]) -> None:
        self._pipeline_factory = pipeline_factory
        self._lock = threading.Lock()
        self.current: Launch | None = None
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, steps: Sequence[str] | None = None, options: dict[str, Any] | None = None) -> Launch:
        with self._lock:
            if self.busy and self.current is not None:
                return self.current
            launch = Launch(list(steps) if steps else None, datetime.now(UTC))
            self.current = launch
            self._thread = threading.Thread(
                target=self._run, args=(launch, options or {}), name="costlake-manual-run", daemon=True
            )
            self._thread.start()
            return launch

    def wait(self, timeout: float | None = None) -> Launch | None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.current

    def _run(self, launch: Launch, options: dict[str, Any]) -> None:
        def progress(event: Any) -> None:
            launch.run_id = event.run_id
            launch.status = "running"
            launch.events.append(event)

        try:
            summary = self._pipeline_factory().run(
                steps=launch.steps, trigger="manual", options=options, progress=progress
            )
            launch.run_id, launch.status, launch.error = summary.run_id, summary.status, summary.error
        except Exception as exc:
            # The run could not even start (e.g. a missing step module): keep it for the page to show.
            log.exception("manual pipeline run could not run (steps %s)", launch.steps)
            launch.status, launch.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            launch.finished_at = datetime.now(UTC)
