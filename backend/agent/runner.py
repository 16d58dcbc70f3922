"""Runs the agent's SQL on the read-only role and records every statement that reaches the server, for display and audit."""

from __future__ import annotations

import contextvars
import logging
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

from backend.agent.sqlguard import DEFAULT_MAX_ROWS, check_sql

log = logging.getLogger(__name__)


@dataclass
class ExecutedSQL:
    """One statement as the server received it (parameters inlined by the driver)."""

    sql: str
    row_count: int | None
    duration_ms: int
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


# The statements of the tool call running in this thread/context; None = not capturing.
_CAPTURE: contextvars.ContextVar[list[ExecutedSQL] | None] = contextvars.ContextVar("agent_sql_capture", default=None)
_INSTRUMENTED: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
# Session plumbing, not questions answered: kept out of what the user and the audit see.
_PLUMBING = ("SET ", "SHOW ", "RESET ")


def _decode(query: object, fallback: str) -> str:
    if isinstance(query, bytes | bytearray):
        return bytes(query).decode("utf-8", "replace")
    return fallback


def instrument(engine: sa.Engine) -> sa.Engine:
    """Install (once) listeners that copy each statement of a capturing context into its list.

    The mart's query functions run their own SQL through this engine; listening at the cursor is
    what lets the UI and the audit show exactly what ran, whoever built it.
    """
    if engine in _INSTRUMENTED:
        return engine

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        if _CAPTURE.get() is not None:
            conn.info.setdefault("agent_t0", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        captured = _CAPTURE.get()
        if captured is None:
            return
        t0 = conn.info.get("agent_t0", [time.perf_counter()]).pop()
        if statement.lstrip().upper().startswith(_PLUMBING):
            return
        captured.append(
            ExecutedSQL(
                sql=_decode(getattr(cursor, "query", None), statement),
                row_count=cursor.rowcount if cursor.rowcount >= 0 else None,
                duration_ms=int((time.perf_counter() - t0) * 1000),
            )
        )

    @event.listens_for(engine, "handle_error")
    def _error(context):
        captured = _CAPTURE.get()
        if captured is None or context.statement is None:
            return
        starts = context.connection.info.get("agent_t0", []) if context.connection is not None else []
        t0 = starts.pop() if starts else time.perf_counter()
        execution = context.execution_context
        cursor = getattr(execution, "cursor", None) if execution is not None else None
        captured.append(
            ExecutedSQL(
                sql=_decode(getattr(cursor, "query", None), context.statement),
                row_count=None,
                duration_ms=int((time.perf_counter() - t0) * 1000),
                error=str(context.original_exception).strip().splitlines()[0][:500],
            )
        )

    _INSTRUMENTED.add(engine)
    return engine


@contextmanager
def capturing() -> Iterator[list[ExecutedSQL]]:
    """Collect the statements run on instrumented engines inside the block (this context only)."""
    statements: list[ExecutedSQL] = []
    token = _CAPTURE.set(statements)
    try:
        yield statements
    finally:
        _CAPTURE.reset(token)


def run_select(engine: sa.Engine, sql: str, *, max_rows: int = DEFAULT_MAX_ROWS, timeout_ms: int) -> pd.DataFrame:
    """Check `sql` (sqlglot guard) and run it in a READ ONLY transaction with a statement timeout.

    Raises UnsafeSQLError before anything reaches the server, or the driver's error (e.g. 57014 when
    the timeout cancels it). The reader role's grants remain the last line of defence.
    """
    checked = check_sql(sql, max_rows=max_rows)
    with engine.connect() as conn:
        # SET LOCAL: the timeout dies with this transaction and cannot leak to the pool's next user.
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        # exec_driver_sql hands the text to psycopg2's %-formatting; the checked SQL has no
        # parameters, so every '%' (LIKE patterns, modulo) is literal.
        result = conn.exec_driver_sql(checked.sql.replace("%", "%%"))
        columns = list(result.keys())
        rows = result.fetchmany(checked.limit)
        conn.rollback()
    frame = pd.DataFrame(rows, columns=_unique(columns))
    log.info("agent SQL returned %d rows over %s", len(frame), ", ".join(checked.tables))
    return frame


def _unique(columns: list[str]) -> list[str]:
    """pandas needs distinct column names; `SELECT sum(a), sum(b)` gives two 'sum'."""
    seen: dict[str, int] = {}
    out = []
    for name in columns:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out
