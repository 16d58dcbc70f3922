"""Writes the run history: a row per pipeline run and per step, and each run's log lines; backend.mart.history reads it.

The tables are ops.pipeline_runs, ops.pipeline_steps and ops.pipeline_logs, all written with the owner engine.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
import sqlalchemy as sa

from backend.logs import current_run_id

log = logging.getLogger(__name__)

RUNNING, SUCCEEDED, FAILED, ABANDONED, SKIPPED, PENDING = (
    "running",
    "succeeded",
    "failed",
    "abandoned",
    "skipped",
    "pending",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StepResult:
    """What a step reports: rows read, rows written, and anything worth showing (JSON-able)."""

    rows_in: int | None = None
    rows_out: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class RunRecorder:
    """Writes run and step rows. Every state change commits at once, so a killed run is visible as such."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def start_run(self, run_id: str, *, trigger: str, steps: list[str], sources: list[str] | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO ops.pipeline_runs (run_id, trigger, steps, sources, status, started_at, host, pid)"
                    " VALUES (:run_id, :trigger, CAST(:steps AS json), CAST(:sources AS json), 'running', :now,"
                    " :host, :pid)"
                ),
                {
                    "run_id": run_id,
                    "trigger": trigger,
                    "steps": json.dumps(steps),
                    "sources": json.dumps(sources),
                    "now": utcnow(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
            for ordinal, step in enumerate(steps):
                conn.execute(
                    sa.text(
                        "INSERT INTO ops.pipeline_steps (run_id, step, ordinal, status)"
                        " VALUES (:run_id, :step, :ordinal, 'pending')"
                    ),
                    {"run_id": run_id, "step": step, "ordinal": ordinal},
                )

    def start_step(self, run_id: str, step: str) -> None:
        self._update_step(run_id, step, status=RUNNING, started_at=utcnow())

    def finish_step(self, run_id: str, step: str, result: StepResult) -> None:
        self._update_step(
            run_id,
            step,
            status=SUCCEEDED,
            finished_at=utcnow(),
            rows_in=result.rows_in,
            rows_out=result.rows_out,
            detail=json.dumps(result.detail, default=str),
        )

    def fail_step(self, run_id: str, step: str, exc: BaseException) -> None:
        self._update_step(
            run_id,
            step,
            status=FAILED,
            finished_at=utcnow(),
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
        )

    def skip_remaining(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE ops.pipeline_steps SET status = 'skipped' WHERE run_id = :r AND status = 'pending'"),
                {"r": run_id},
            )

    def finish_run(
        self, run_id: str, *, status: str, error: str | None = None, rows_in: int | None, rows_out: int | None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE ops.pipeline_runs SET status = :status, finished_at = :now, error = :error,"
                    " rows_in = :rows_in, rows_out = :rows_out WHERE run_id = :run_id"
                ),
                {
                    "status": status,
                    "now": utcnow(),
                    "error": error,
                    "rows_in": rows_in,
                    "rows_out": rows_out,
                    "run_id": run_id,
                },
            )

    def _update_step(self, run_id: str, step: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = CAST(:{k} AS json)" if k == "detail" else f"{k} = :{k}" for k in values)
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE ops.pipeline_steps SET {sets} WHERE run_id = :run_id AND step = :step"),
                {**values, "run_id": run_id, "step": step},
            )

    def abandon_dead_runs(self) -> list[str]:
        """Mark runs whose process is gone as abandoned (a SIGKILL leaves them 'running' otherwise).

        Only runs started on this host can be checked; their pid must be dead or belong to a process
        started after the run (pid reuse)."""
        host = socket.gethostname()
        abandoned: list[str] = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.text("SELECT run_id, pid, started_at FROM ops.pipeline_runs WHERE status = 'running' AND host = :h"),
                {"h": host},
            ).all()
            for run_id, pid, started_at in rows:
                if _process_alive_since(pid, started_at):
                    continue
                conn.execute(
                    sa.text(
                        "UPDATE ops.pipeline_runs SET status = 'abandoned', finished_at = :now,"
                        " error = COALESCE(error, 'process ended without finishing the run (killed or crashed)')"
                        " WHERE run_id = :r"
                    ),
                    {"now": utcnow(), "r": run_id},
                )
                conn.execute(
                    sa.text(
                        "UPDATE ops.pipeline_steps SET status = 'abandoned', finished_at = :now"
                        " WHERE run_id = :r AND status IN ('running', 'pending')"
                    ),
                    {"now": utcnow(), "r": run_id},
                )
                abandoned.append(run_id)
        for run_id in abandoned:
            log.warning("run %s was left running by a dead process; marked abandoned", run_id)
        return abandoned


def _process_alive_since(pid: int | None, started_at: datetime) -> bool:
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= started_at.timestamp() + 1.0
    except psutil.Error:
        return False


class RunLogHandler(logging.Handler):
    """Collects the log lines of one run (by the run-id context variable) and stores them in ops.pipeline_logs."""

    def __init__(self, engine: sa.Engine, run_id: str, *, level: int = logging.INFO, max_lines: int = 5000) -> None:
        super().__init__(level)
        self.engine = engine
        self.run_id = run_id
        self.max_lines = max_lines
        self._buffer: list[dict[str, Any]] = []
        self._count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if current_run_id.get() != self.run_id or self._count >= self.max_lines:
            return
        self._count += 1
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{''.join(traceback.format_exception(*record.exc_info))}"
        self._buffer.append(
            {
                "run_id": self.run_id,
                "ts": datetime.fromtimestamp(record.created, UTC),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
            }
        )

    def flush(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO ops.pipeline_logs (run_id, ts, level, logger, message)"
                    " VALUES (:run_id, :ts, :level, :logger, :message)"
                ),
                rows,
            )
