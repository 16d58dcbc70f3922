"""The users' audit trail (ops.user_audit): who did which write, or was refused it, and when."""

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
