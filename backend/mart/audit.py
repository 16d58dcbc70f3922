"""Audit trails: the users' writes (ops.user_audit: who did which write, or was refused it, and when) and the agent's questions (mart.agent_audit)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from backend.auth.roles import Principal

log = logging.getLogger(__name__)

_INSERT = sa.text(
    "INSERT INTO ops.user_audit (who, role, action, target, outcome, detail)"
    " VALUES (:who, :role, :action, :target, :outcome, CAST(:detail AS jsonb)) RETURNING audit_id"
)


@dataclass(frozen=True)
class AuditEntry:
    audit_id: int
    at: datetime
    who: str
    role: str
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any]


def record(
    conn: sa.Connection,
    actor: Principal,
    action: str,
    target: str | None = None,
    detail: Mapping[str, Any] | None = None,
    *,
    outcome: str = "done",
) -> int:
    """One audit row on `conn`: callers pass the connection of their own write, so the change and its
    audit row commit together or not at all. Never put a secret in `detail` (admins read it)."""
    return conn.execute(
        _INSERT,
        {
            "who": actor.who,
            "role": actor.role.name,
            "action": action,
            "target": target,
            "outcome": outcome,
            "detail": json.dumps(dict(detail or {}), default=str),
        },
    ).scalar_one()


def record_now(
    engine: sa.Engine,
    actor: Principal,
    action: str,
    target: str | None = None,
    detail: Mapping[str, Any] | None = None,
    *,
    outcome: str = "done",
) -> int:
    """An audit row in its own transaction: for writes that are not SQL (the inbox, the job store's
    triggers, starting a run) and for refused attempts."""
    with engine.begin() as conn:
        return record(conn, actor, action, target, detail, outcome=outcome)


def recent(engine: sa.Engine, *, limit: int = 200, who: str | None = None) -> list[AuditEntry]:
    """The latest entries first (owner engine: the read-only role has no grant on ops.user_audit)."""
    sql = (
        "SELECT audit_id, at, who, role, action, target, outcome, detail FROM ops.user_audit"
        " WHERE (CAST(:who AS text) IS NULL OR who = :who) ORDER BY at DESC, audit_id DESC LIMIT :limit"
    )
    with engine.connect() as conn:
        return [AuditEntry(*row) for row in conn.execute(sa.text(sql), {"who": who, "limit": limit})]


def record_agent_question(
    engine: sa.Engine,
    *,
    session_id: str | None,
    user_name: str | None,
    question: str,
    answer: str | None,
    model: str | None,
    tool_calls: list[dict[str, Any]],
    sql_statements: Any,
    row_count: int,
    duration_ms: int | None,
    error: str | None,
) -> int:
    """One mart.agent_audit row per question the agent answered (owner role: the reader cannot write); its id."""
    with engine.begin() as conn:
        return conn.execute(
            sa.text(
                """INSERT INTO mart.agent_audit (session_id, user_name, question, answer, model, tool_calls,
                       sql_statements, row_count, duration_ms, error)
                   VALUES (:session_id, :user_name, :question, :answer, :model, CAST(:tool_calls AS jsonb),
                       CAST(:sql AS jsonb), :row_count, :duration_ms, :error)
                   RETURNING audit_id"""
            ),
            {
                "session_id": session_id,
                "user_name": user_name,
                "question": question,
                "answer": answer,
                "model": model,
                "tool_calls": json.dumps(tool_calls),
                "sql": json.dumps(sql_statements),
                "row_count": row_count,
                "duration_ms": duration_ms,
                "error": error,
            },
        ).scalar_one()
