"""The delivery store's SQL (ops.notification_*): events, deliveries, page channels, notified anomalies, run outcomes."""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from backend.auth import Principal
from backend.mart.audit import record
from backend.notify.channels import (
    EVENTS,
    PAGE,
    Channel,
    ChannelError,
    check_name,
    check_target,
)
from backend.notify.render import Message
from backend.notify.rules import check_events

log = logging.getLogger(__name__)

OPEN_STATUSES = ("pending", "retrying")


# --- events and deliveries ------------------------------------------------------------------------------
def insert_event(conn: sa.Connection, *, kind: str, dedup_key: str, message: Message, run_id: str | None) -> int | None:
    """The new event's id, or None when an event with this dedup key exists (it was queued before: never twice)."""
    return conn.execute(
        sa.text(
            "INSERT INTO ops.notification_events (kind, dedup_key, subject, payload, run_id)"
            " VALUES (:kind, :key, :subject, CAST(:payload AS jsonb), :run_id)"
            " ON CONFLICT (dedup_key) DO NOTHING RETURNING event_id"
        ),
        {
            "kind": kind,
            "key": dedup_key,
            "subject": message.title,
            "payload": json.dumps(message.to_json(), default=str),
            "run_id": run_id,
        },
    ).scalar()


def event_exists(conn: sa.Connection, dedup_key: str) -> bool:
    found = conn.execute(sa.text("SELECT 1 FROM ops.notification_events WHERE dedup_key = :k"), {"k": dedup_key})
    return found.first() is not None


def insert_deliveries(
    conn: sa.Connection, event_id: int, channels: list[Channel], *, due: datetime | None
) -> list[int]:
    """One delivery per channel, due at `due` (None: sent by whoever queued it, e.g. a test message)."""
    ids = []
    for channel in channels:
        delivery_id = conn.execute(
            sa.text(
                "INSERT INTO ops.notification_deliveries (event_id, channel, channel_name, channel_kind, status,"
                " next_attempt_at) VALUES (:e, :c, :n, :k, 'pending', :due)"
                " ON CONFLICT ON CONSTRAINT uq_notification_delivery_once DO NOTHING RETURNING delivery_id"
            ),
            {"e": event_id, "c": channel.key, "n": channel.name, "k": channel.kind, "due": due},
        ).scalar()
        if delivery_id is not None:
            ids.append(delivery_id)
    return ids


_CLAIM = """
    SELECT d.delivery_id, d.event_id, d.channel, d.channel_name, d.channel_kind, d.status, d.attempts,
           e.kind, e.dedup_key, e.payload, e.created_at, e.run_id
    FROM ops.notification_deliveries d JOIN ops.notification_events e USING (event_id)
    WHERE d.status IN ('pending', 'retrying') AND {where}
    ORDER BY d.next_attempt_at NULLS FIRST, d.delivery_id
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED"""


def claim_next(
    conn: sa.Connection,
    *,
    now: datetime,
    done: list[int],
    event_ids: list[int] | None = None,
    delivery_id: int | None = None,
) -> dict[str, Any] | None:
    """The next due delivery, locked for this transaction (another dispatcher skips it, so nothing is sent twice).

    `done` are the deliveries this dispatch already tried: one dispatch tries a delivery once (its in-run
    retries aside), however short the backoff."""
    params: dict[str, Any] = {"now": now, "done": done or [0]}
    if delivery_id is not None:
        where, params["id"] = "d.delivery_id = :id", delivery_id
    else:
        where = "d.next_attempt_at <= :now AND d.delivery_id <> ALL(:done)"
        if event_ids is not None:
            where += " AND d.event_id = ANY(:events)"
            params["events"] = event_ids or [0]
    row = conn.execute(sa.text(_CLAIM.format(where=where)), params).mappings().first()
    return dict(row) if row else None


def record_attempt(
    conn: sa.Connection,
    delivery_id: int,
    *,
    status: str,
    attempts: int,
    error: str | None,
    next_at: datetime | None,
    now: datetime,
) -> None:
    conn.execute(
        sa.text(
            # A delivery that got through keeps the error its earlier attempts met (what the retries were for).
            "UPDATE ops.notification_deliveries SET status = :s, attempts = :n,"
            " last_error = CASE WHEN :s = 'delivered' THEN last_error ELSE :e END,"
            " last_attempt_at = CASE WHEN :tried THEN :now ELSE last_attempt_at END, next_attempt_at = :next,"
            " delivered_at = CASE WHEN :s = 'delivered' THEN :now END WHERE delivery_id = :id"
        ),
        {
            "s": status,
            "n": attempts,
            "e": error,
            "tried": status != "cancelled",
            "now": now,
            "next": next_at,
            "id": delivery_id,
        },
    )


def delivery(engine: sa.Engine, delivery_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM ops.notification_deliveries WHERE delivery_id = :id"), {"id": delivery_id}
        ).mappings()
        found = row.first()
    return dict(found) if found else None


def recent_deliveries(engine: sa.Engine, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest deliveries with their event (reader role may call it: no secrets here)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.delivery_id, e.created_at AS queued_at, e.kind AS event, e.subject, d.channel_name AS channel,"
                " d.channel_kind AS kind, d.status, d.attempts, d.last_error, d.last_attempt_at, d.next_attempt_at,"
                " d.delivered_at, e.run_id FROM ops.notification_deliveries d JOIN ops.notification_events e"
                " USING (event_id) ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT :n"
            ),
            {"n": limit},
        ).mappings()
        return [dict(r) for r in rows]


def delivery_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, count(*) FROM ops.notification_deliveries GROUP BY 1")).all()
    return {status: int(n) for status, n in rows}


def delivery_summary(conn: sa.Connection, event_ids: list[int]) -> dict[str, int]:
    """Deliveries of these events: a budget's own webhook (webhooks_*) apart from the other channels."""
    rows = conn.execute(
        sa.text(
            "SELECT channel LIKE 'budget:%' AS own, status = 'delivered' AS ok, count(*)"
            " FROM ops.notification_deliveries WHERE event_id = ANY(:ids) GROUP BY 1, 2"
        ),
        {"ids": event_ids or [0]},
    ).all()
    out = {"webhooks_delivered": 0, "webhooks_failed": 0, "notifications_delivered": 0, "notifications_failed": 0}
    for own, ok, n in rows:
        prefix = "webhooks" if own else "notifications"
        out[f"{prefix}_{'delivered' if ok else 'failed'}"] += int(n)
    return out


def cancel_open(conn: sa.Connection, channel_key: str, reason: str, *, now: datetime) -> int:
    return conn.execute(
        sa.text(
            "UPDATE ops.notification_deliveries SET status = 'cancelled', last_error = :r, next_attempt_at = NULL"
            " WHERE channel = :c AND status IN ('pending', 'retrying')"
        ),
        {"c": channel_key, "r": reason},
    ).rowcount


# --- budgets: the per-budget webhook and the alert's own delivery columns ---------------------------------
def budget_webhook(conn: sa.Connection, budget_id: int) -> tuple[str, str] | None:
    """(name, webhook URL) of a budget that still has one; read at send time, so an edited URL is used."""
    row = conn.execute(
        sa.text("SELECT name, webhook_url FROM mart.budgets WHERE budget_id = :id AND coalesce(webhook_url, '') <> ''"),
        {"id": budget_id},
    ).first()
    return (row[0], row[1]) if row else None


def budget_channels(engine: sa.Engine) -> list[Channel]:
    """Every budget's own webhook, as a channel (owner role: the URLs are secrets)."""
    from backend.notify.channels import budget_channel

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT budget_id, name, webhook_url FROM mart.budgets WHERE coalesce(webhook_url, '') <> ''"
                " ORDER BY name"
            )
        ).all()
    return [budget_channel(budget_id, name, url) for budget_id, name, url in rows]


def sync_budget_alert(
    conn: sa.Connection, alert_id: int, *, status: str, attempts: int, error: str | None, now: datetime
) -> None:
    """The alert history's webhook columns follow the budget's own delivery (the Budgets page shows them)."""
    shown = {"delivered": "delivered", "pending": "pending"}.get(status, "failed")
    conn.execute(
        sa.text(
            "UPDATE mart.budget_alerts SET webhook_status = :s, webhook_attempts = :n, webhook_error = :e,"
            " delivered_at = CASE WHEN :s = 'delivered' THEN :now END WHERE alert_id = :id"
        ),
        {"s": shown, "n": attempts, "e": error, "now": now, "id": alert_id},
    )


# --- channels added on the page ---------------------------------------------------------------------------
def _page_channel(row: Any) -> Channel:
    return Channel(
        f"{PAGE}:{row.channel_id}", row.name, row.kind, row.target, frozenset(row.events), PAGE, bool(row.enabled)
    )


def page_channels(engine_or_conn: sa.Engine | sa.Connection) -> list[Channel]:
    """Channels added on Sources & settings (owner role: the targets are secrets the reader may not read)."""
    sql = sa.text("SELECT channel_id, name, kind, target, events, enabled FROM ops.notification_channels ORDER BY name")
    if isinstance(engine_or_conn, sa.Connection):
        return [_page_channel(r) for r in engine_or_conn.execute(sql)]
    with engine_or_conn.connect() as conn:
        return [_page_channel(r) for r in conn.execute(sql)]


def add_channel(
    engine: sa.Engine,
    *,
    name: str,
    kind: str,
    target: str,
    events: list[str] | tuple[str, ...] = EVENTS,
    created_by: str | None = None,
    actor: Principal | None = None,
) -> int:
    """A new channel, checked first: a bad one is refused with what to fix and nothing is stored. With an
    `actor`, the write is audited in the same transaction (never the target: it is a secret)."""
    name = check_name(name)
    target = check_target(kind, target, what="the URL" if kind != "email" else "the addresses")
    chosen = check_events(list(events), what="events")
    if not chosen:
        raise ChannelError("choose at least one event the channel receives")
    with engine.begin() as conn:
        taken = conn.execute(sa.text("SELECT 1 FROM ops.notification_channels WHERE name = :n"), {"n": name}).first()
        if taken:
            raise ChannelError(f"a channel named {name!r} exists; choose another name")
        channel_id = conn.execute(
            sa.text(
                "INSERT INTO ops.notification_channels (name, kind, target, events, created_by)"
                " VALUES (:n, :k, :t, :ev, :by) RETURNING channel_id"
            ),
            {"n": name, "k": kind, "t": target, "ev": sorted(chosen), "by": created_by or (actor and actor.who)},
        ).scalar_one()
        if actor is not None:
            record(conn, actor, "notify.channel.add", f"channel {channel_id}",
                   {"name": name, "kind": kind, "events": sorted(chosen)})  # fmt: skip
        return channel_id


def set_channel_enabled(
    engine: sa.Engine, channel_id: int, enabled: bool, *, now: datetime, actor: Principal | None = None
) -> None:
    with engine.begin() as conn:
        n = conn.execute(
            sa.text("UPDATE ops.notification_channels SET enabled = :e, updated_at = now() WHERE channel_id = :id"),
            {"e": enabled, "id": channel_id},
        ).rowcount
        if not n:
            raise LookupError(f"channel {channel_id} not found")
        if not enabled:
            cancel_open(conn, f"{PAGE}:{channel_id}", "channel disabled", now=now)
        if actor is not None:
            record(
                conn, actor, "notify.channel.enable" if enabled else "notify.channel.disable", f"channel {channel_id}"
            )


def delete_channel(engine: sa.Engine, channel_id: int, *, now: datetime, actor: Principal | None = None) -> None:
    """Deletes the channel; its delivery history stays, anything still queued for it is cancelled."""
    with engine.begin() as conn:
        name = conn.execute(
            sa.text("DELETE FROM ops.notification_channels WHERE channel_id = :id RETURNING name"), {"id": channel_id}
        ).scalar_one_or_none()
        cancel_open(conn, f"{PAGE}:{channel_id}", "channel deleted", now=now)
        if actor is not None and name is not None:
            record(conn, actor, "notify.channel.delete", f"channel {channel_id}", {"name": name})


# --- what events are made of -------------------------------------------------------------------------------
def run_outcome(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    """A run's status, trigger, times and error, with the step that failed (or was running when it was abandoned)."""
    run = conn.execute(
        sa.text(
            "SELECT run_id, status, trigger, started_at, finished_at, error, host FROM ops.pipeline_runs"
            " WHERE run_id = :r"
        ),
        {"r": run_id},
    ).mappings()
    found = run.first()
    if found is None:
        return None
    out = dict(found)
    step = conn.execute(
        sa.text(
            "SELECT step, status, error FROM ops.pipeline_steps WHERE run_id = :r"
            " AND (status = 'failed' OR (status = 'abandoned' AND started_at IS NOT NULL)) ORDER BY ordinal LIMIT 1"
        ),
        {"r": run_id},
    ).mappings()
    failed = step.first()
    out["step"] = failed["step"] if failed else None
    out["step_error"] = failed["error"] if failed else None
    return out


def newest_anomaly_day(conn: sa.Connection) -> date | None:
    """The newest charge day with cost or an anomaly: "recent" anomalies are counted back from it."""
    return conn.execute(
        sa.text(
            "SELECT greatest((SELECT max(charge_date) FROM mart.agg_cost_daily),"
            " (SELECT max(charge_date) FROM mart.anomalies))"
        )
    ).scalar()


def unnotified_anomalies(conn: sa.Connection, *, since: date) -> list[dict[str, Any]]:
    """Open anomalies on charge days from `since` that no digest carried, the largest cost impact first."""
    rows = conn.execute(
        sa.text(
            """
            SELECT a.anomaly_id, a.level, a.dimension_value, a.metric, coalesce(a.currency, '') AS currency,
                   a.charge_date, a.expected, a.actual, a.impact, a.severity, a.kind, a.contributors
            FROM mart.anomalies a
            WHERE a.status = 'open' AND a.charge_date >= :since
              AND NOT EXISTS (SELECT 1 FROM ops.notified_anomalies n WHERE n.level = a.level
                  AND n.dimension_value = a.dimension_value AND n.metric = a.metric
                  AND n.currency = coalesce(a.currency, '') AND n.charge_date = a.charge_date)
            ORDER BY abs(coalesce(a.impact, 0)) DESC, a.severity DESC NULLS LAST, a.anomaly_id"""
        ),
        {"since": since},
    ).mappings()
    return [dict(r) for r in rows]


def mark_anomalies_notified(conn: sa.Connection, anomalies: list[dict[str, Any]], event_id: int | None) -> None:
    if not anomalies:
        return
    conn.execute(
        sa.text(
            "INSERT INTO ops.notified_anomalies (level, dimension_value, metric, currency, charge_date, event_id)"
            " VALUES (:level, :dimension_value, :metric, :currency, :charge_date, :event_id) ON CONFLICT DO NOTHING"
        ),
        [
            {
                **{k: a[k] for k in ("level", "dimension_value", "metric", "currency", "charge_date")},
                "event_id": event_id,
            }
            for a in anomalies
        ],
    )


def digest_sent_on(conn: sa.Connection, day: date) -> bool:
    """Whether an anomaly digest was queued on that UTC day (NOTIFY_ANOMALY_DIGEST=daily)."""
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM ops.notification_events WHERE kind = 'anomalies'"
            " AND (created_at AT TIME ZONE 'UTC')::date = :d LIMIT 1"
        ),
        {"d": day},
    )
    return found.first() is not None
