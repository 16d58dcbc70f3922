"""Typed readers of what the pipeline recorded: runs, steps, run logs, mart loads, reconciliation checks, cursors.

backend.mart.run_records, backend.mart.load, backend.mart.reconcile and backend.sources.cursors write these
tables; the pages (and anything else that only looks) read them here. Functions take an engine; the
reader role sees ops.pipeline_runs / ops.pipeline_steps and the mart, while ops.pipeline_logs and
ops.source_cursors need the owner engine (said per function).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class RunRecord:
    """One recorded pipeline run; `seconds` runs on (to now) while the run has not finished.

    (What run_pipeline returns about the run it just ran is backend.pipeline.runner.RunSummary.)"""

    run_id: str
    trigger: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    rows_in: int | None
    rows_out: int | None
    error: str | None
    seconds: float | None


@dataclass(frozen=True)
class StepRow:
    """One step of a run; `seconds` is None for a step that never started."""

    step: str
    ordinal: int
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    rows_in: int | None
    rows_out: int | None
    error: str | None
    detail: Any
    seconds: float | None


@dataclass(frozen=True)
class LogLine:
    ts: dt.datetime
    level: str
    logger: str
    message: str


@dataclass(frozen=True)
class LoadRecord:
    """One mart load (backend.mart.load writes mart.load_history)."""

    load_id: int
    run_id: str | None
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    months: Any
    rows_loaded: int | None
    rows_replaced: int | None
    duration_ms: int | None
    error: str | None


@dataclass(frozen=True)
class ReconciliationCheck:
    """The header of one reconciliation check; its mismatching rows come from reconcile.list_mismatches."""

    check_id: int
    checked_at: dt.datetime
    run_id: str | None
    tolerance: float | None
    days_checked: int | None
    mismatches: int | None


@dataclass(frozen=True)
class CursorSummary:
    """What one source delivered for one scope and metric: the day span and when it last fetched."""

    source: str
    scope: str
    metric: str
    first_day: dt.date
    last_day: dt.date
    days: int
    fetched_at: dt.datetime | None


_RUN_COLUMNS = (
    "run_id, trigger, status, started_at, finished_at, rows_in, rows_out, error,"
    " extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8 AS seconds"
)


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    return limit


def list_runs(engine: sa.Engine, *, limit: int = 50) -> list[RunRecord]:
    """The latest runs, newest first (reader role)."""
    sql = f"SELECT {_RUN_COLUMNS} FROM ops.pipeline_runs ORDER BY started_at DESC, run_id DESC LIMIT :n"
    with engine.connect() as conn:
        return [RunRecord(*row) for row in conn.execute(sa.text(sql), {"n": _check_limit(limit)})]


def latest_run(engine: sa.Engine, *, status: str | None = None) -> RunRecord | None:
    """The newest run, or the newest with `status` (e.g. "succeeded"); None when there is none (reader role)."""
    sql = (
        f"SELECT {_RUN_COLUMNS} FROM ops.pipeline_runs WHERE CAST(:status AS text) IS NULL OR status = :status"
        " ORDER BY started_at DESC, run_id DESC LIMIT 1"
    )
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql), {"status": status}).first()
    return RunRecord(*row) if row else None


def run_steps(engine: sa.Engine, run_id: str) -> list[StepRow]:
    """The steps of one run in the order they run; empty for an unknown run (reader role)."""
    sql = (
        "SELECT step, ordinal, status, started_at, finished_at, rows_in, rows_out, error, detail,"
        " extract(epoch FROM coalesce(finished_at, CASE WHEN started_at IS NOT NULL THEN now() END)"
        " - started_at)::float8 AS seconds FROM ops.pipeline_steps WHERE run_id = :r ORDER BY ordinal"
    )
    with engine.connect() as conn:
        return [StepRow(*row) for row in conn.execute(sa.text(sql), {"r": run_id})]


def run_logs(owner: sa.Engine, run_id: str, *, limit: int = 500) -> list[LogLine]:
    """The first `limit` log lines of one run, oldest first. ops.pipeline_logs is not granted to the reader
    role (messages may name hosts and paths), so this takes the owner engine."""
    sql = "SELECT ts, level, logger, message FROM ops.pipeline_logs WHERE run_id = :r ORDER BY id LIMIT :n"
    with owner.connect() as conn:
        return [LogLine(*row) for row in conn.execute(sa.text(sql), {"r": run_id, "n": _check_limit(limit)})]


def load_history(engine: sa.Engine, *, limit: int = 20) -> list[LoadRecord]:
    """The latest mart loads, newest first (reader role)."""
    sql = (
        "SELECT load_id, run_id, status, started_at, finished_at, months, rows_loaded, rows_replaced,"
        " duration_ms, error FROM mart.load_history ORDER BY load_id DESC LIMIT :n"
    )
    with engine.connect() as conn:
        return [LoadRecord(*row) for row in conn.execute(sa.text(sql), {"n": _check_limit(limit)})]


def latest_reconciliation(engine: sa.Engine) -> ReconciliationCheck | None:
    """The newest reconciliation check's header, None before the first check (reader role)."""
    sql = (
        "SELECT check_id, checked_at, run_id, tolerance::float8, days_checked, mismatches"
        " FROM mart.reconciliation_checks ORDER BY check_id DESC LIMIT 1"
    )
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql)).first()
    return ReconciliationCheck(*row) if row else None


def cursor_summary(owner: sa.Engine) -> list[CursorSummary]:
    """Per source, scope and metric: which days the cursors hold (owner engine: ops.source_cursors is not
    granted to the reader role)."""
    sql = (
        "SELECT source, scope, metric, min(day), max(day), count(DISTINCT day), max(fetched_at) FROM ops.source_cursors"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    with owner.connect() as conn:
        return [CursorSummary(*row) for row in conn.execute(sa.text(sql))]
