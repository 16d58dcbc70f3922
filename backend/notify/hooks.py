"""The pipeline's notification points: retries before a run, its outcome and the data's news after it; never raising."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from backend.notify import events
from backend.notify.dispatch import dispatch

if TYPE_CHECKING:
    from backend.config import Settings

log = logging.getLogger(__name__)


def before_run(engine: sa.Engine, settings: Settings, *, abandoned: list[str]) -> None:
    """Queue the runs found abandoned, then retry every delivery that is due (failed at earlier runs)."""
    try:
        for run_id in abandoned:
            events.queue_run(engine, settings, run_id)
        dispatch(engine, settings)
    except Exception:
        # Telling people about problems must never become one: the run goes ahead either way.
        log.exception("notifications before the run failed; the run goes on")


def after_run(engine: sa.Engine, settings: Settings, *, run_id: str, status: str) -> None:
    """Queue the run's failure, stale sources and the anomaly digest, then deliver what is due."""
    steps = (
        ("the run's outcome", lambda: events.queue_run(engine, settings, run_id) if status == "failed" else None),
        ("stale data", lambda: events.queue_stale(engine, settings, run_id=run_id)),
        ("the anomaly digest", lambda: events.queue_anomaly_digest(engine, settings, run_id=run_id)),
        ("the deliveries", lambda: dispatch(engine, settings)),
    )
    for what, step in steps:
        try:
            step()
        except Exception:
            # Each part on its own: a broken freshness query must not keep a failed run's alert from going out.
            log.exception("notifications after run %s: %s failed; the run's outcome is unchanged", run_id, what)
