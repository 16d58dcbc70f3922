"""The scheduled jobs: fixed ids, default triggers, and the module-level functions APScheduler persists by reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# The step lists earlier versions stored with their default jobs when they meant "every step": such a job
# now runs every step (steps None, the pipeline's own list), so a step added later is never missing from
# a schedule saved before it existed.
FORMER_ALL_STEPS = (("ingest", "bronze", "silver", "gold", "mart", "analytics", "budgets"),)


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    name: str
    trigger: str  # "interval" or "cron"
    trigger_args: dict[str, Any]
    steps: tuple[str, ...] | None = None  # None: every step of the pipeline (backend.pipeline.steps.ALL_STEPS)
    options: tuple[tuple[str, Any], ...] = ()


# Options earlier versions stored in their jobs and runs no longer take: every run re-pulls the open
# billing window, so "refetch_open_window" never changed what a run did.
RETIRED_OPTIONS = ("refetch_open_window",)

# Fixed ids: a restart finds the same jobs (with any schedule the user changed), never duplicates.
DEFAULT_JOBS = (
    JobSpec("pipeline-hourly", "Ingest and process new cost data", "interval", {"hours": 1}),
    JobSpec(
        "open-window-daily",
        "Re-fetch the open billing window (Azure re-rates for up to 72 h)",
        "cron",
        {"hour": 3, "minute": 30},
    ),
    JobSpec(
        "lake-maintenance",
        "Compact bronze's small files and vacuum old Delta files",
        "cron",
        {"day_of_week": "sun", "hour": 4, "minute": 15},
        steps=("maintenance",),
    ),
    JobSpec(
        "inbox-scan",
        "Import files dropped in the inbox folder",
        "interval",
        {"minutes": 5},
        options=(("sources", ("inbox",)),),
    ),
)


def run_job(job_id: str, steps: list[str] | None = None, options: dict[str, Any] | None = None) -> str:
    """Entry point APScheduler calls (by reference, so it survives restarts). Returns the run status."""
    from scheduler.service import run_pipeline_now

    summary = run_pipeline_now(steps=steps, trigger=f"schedule:{job_id}", options=options or {})
    if summary.status == "failed":
        # Raising marks the job execution as failed in APScheduler's events too; the run row says why.
        raise RuntimeError(f"pipeline run {summary.run_id} failed: {summary.error}")
    return summary.status
