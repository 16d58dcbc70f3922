"""Queue events for their channels and deliver what is due: one locked delivery at a time, backoff across runs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
import sqlalchemy as sa

from backend.mart import notifications
from backend.notify.channels import (
    BUDGET,
    BUDGET_ALERT,
    EMAIL,
    PAGE,
    SETTINGS,
    TEST,
    Channel,
    budget_channel,
    settings_channels,
)
from backend.notify.render import Message, render, render_email
from backend.notify.rules import smtp_ready
from backend.notify.send import HttpPost, Outcome, post_json, send_mail

if TYPE_CHECKING:
    from backend.config import Settings

log = logging.getLogger(__name__)

DELIVERED, RETRYING, FAILED, CANCELLED = "delivered", "retrying", "failed", "cancelled"
# A Retry-After longer than this is honoured at a later run rather than by holding the current one.
_MAX_WAIT_IN_RUN_S = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class DispatchStats:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }


def backoff_s(attempts: int, *, base: float, cap: float) -> float:
    """Seconds until the next try after `attempts` failed ones: base, 2x base, 4x base, … capped."""
    if attempts < 1:
        return 0.0
    return min(cap, base * 2 ** min(attempts - 1, 30))


def channels_for(conn: sa.Connection, settings: Settings, kind: str) -> list[Channel]:
    """The settings' and the page's channels that take this kind of event (a budget's own webhook is added apart)."""
    return [c for c in settings_channels(settings) + notifications.page_channels(conn) if c.wants(kind)]


def enqueue(
    conn: sa.Connection,
    settings: Settings,
    *,
    kind: str,
    dedup_key: str,
    message: Message,
    run_id: str | None,
    extra: Sequence[Channel] = (),
    now: datetime | None = None,
) -> int | None:
    """Queue `message` for every channel that wants it (in the caller's transaction). None if already queued once.

    With no channel at all the event is still recorded: the dedup key then stops a channel added later from
    receiving a backlog of old news."""
    event_id = notifications.insert_event(conn, kind=kind, dedup_key=dedup_key, message=message, run_id=run_id)
    if event_id is None:
        return None
    targets = channels_for(conn, settings, kind) + [c for c in extra if c.wants(kind)]
    notifications.insert_deliveries(conn, event_id, targets, due=now or utcnow())
    log.info("notification %s queued for %d channel(s): %s", dedup_key, len(targets), message.title)
    return event_id


def _resolve(conn: sa.Connection, settings: Settings, key: str, pages: dict[str, Channel]) -> Channel | str:
    """The channel behind a delivery's key now, or why it is gone (its deliveries are then cancelled)."""
    origin, _, ident = key.partition(":")
    if origin == SETTINGS:
        found = next((c for c in settings_channels(settings) if c.key == key), None)
        return found or "channel no longer configured in settings"
    if origin == PAGE:
        channel = pages.get(key)
        if channel is None:
            return "channel deleted"
        return channel if channel.enabled else "channel disabled"
    if origin == BUDGET:
        hook = notifications.budget_webhook(conn, int(ident))
        return budget_channel(int(ident), hook[0], hook[1]) if hook else "budget deleted or its webhook removed"
    return f"unknown channel {key!r}"


def _send_once(
    channel: Channel, message: Message, row: dict[str, Any], settings: Settings, *, timeout: float, http_post: HttpPost
) -> Outcome:
    if channel.kind == EMAIL:
        if problem := smtp_ready(settings):
            return Outcome(False, problem)  # not permanent: the settings may be fixed before the next run
        mail = render_email(message, sender=settings.smtp_from, recipients=channel.recipients, event_id=row["event_id"])
        return send_mail(settings, mail, timeout=timeout)
    created = row["created_at"].isoformat() if row.get("created_at") else ""
    body = render(channel.kind, message, event_id=row["event_id"], dedup_key=row["dedup_key"], created_at=created)
    # Receivers that deduplicate can key on this: a retry of one delivery carries the same value.
    headers = {"Idempotency-Key": f"costlake-{row['delivery_id']}", "User-Agent": "Costlake-notify"}
    return post_json(channel.target, body, timeout=timeout, http_post=http_post, headers=headers)


def dispatch(
    engine: sa.Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    event_ids: list[int] | None = None,
    delivery_id: int | None = None,
    http_post: HttpPost = requests.post,
    budget_retries: int | None = None,
    budget_timeout: float | None = None,
    pause_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> DispatchStats:
    """Try every due delivery once (plus NOTIFY_RETRIES_IN_RUN quick retries); reschedule or give up the failures.

    Never raises for a receiver's failure: that is recorded on the delivery. `event_ids` limits it to some
    events (the budgets step sends its own alerts at once), `delivery_id` to one delivery (a test message)."""
    fixed = now  # a test's clock; otherwise each attempt is recorded at the time it happened
    now = now or utcnow()
    stats = DispatchStats()
    done: list[int] = []
    pages = {c.key: c for c in notifications.page_channels(engine)}
    while True:
        with engine.begin() as conn:
            row = notifications.claim_next(conn, now=now, done=done, event_ids=event_ids, delivery_id=delivery_id)
            if row is None or row["delivery_id"] in done:
                break
            done.append(row["delivery_id"])
            at = fixed or utcnow()
            channel = _resolve(conn, settings, row["channel"], pages)
            if isinstance(channel, str):
                notifications.record_attempt(
                    conn,
                    row["delivery_id"],
                    status=CANCELLED,
                    attempts=row["attempts"],
                    error=channel,
                    next_at=None,
                    now=at,
                )
                stats.cancelled += 1
                log.info(
                    "notification delivery %s to %s cancelled: %s", row["delivery_id"], row["channel_name"], channel
                )
                continue
            _deliver(
                conn,
                row,
                channel,
                settings,
                stats,
                now=at,
                http_post=http_post,
                budget_retries=budget_retries,
                budget_timeout=budget_timeout,
                pause_s=pause_s,
                sleep=sleep,
            )
        if delivery_id is not None:
            break
    if done:
        log.info("notifications: %s", stats.as_dict())
    return stats


def _deliver(
    conn: sa.Connection,
    row: dict[str, Any],
    channel: Channel,
    settings: Settings,
    stats: DispatchStats,
    *,
    now: datetime,
    http_post: HttpPost,
    budget_retries: int | None,
    budget_timeout: float | None,
    pause_s: float,
    sleep: Callable[[float], None],
) -> str:
    message = Message.from_json(row["payload"])
    is_budget = channel.origin == BUDGET
    retries = settings.notify_retries_in_run
    timeout = settings.notify_timeout_s
    if is_budget:
        # A budget's own webhook keeps its settings (BUDGET_WEBHOOK_RETRIES / _TIMEOUT_S) within a run.
        retries = settings.budget_webhook_retries if budget_retries is None else budget_retries
        timeout = settings.budget_webhook_timeout_s if budget_timeout is None else budget_timeout
    attempts = row["attempts"]
    outcome = Outcome(False, "not tried")
    for try_index in range(retries + 1):
        outcome = _send_once(channel, message, row, settings, timeout=timeout, http_post=http_post)
        attempts += 1
        if outcome.ok or outcome.permanent or try_index == retries or attempts >= settings.notify_max_attempts:
            break
        wait = max(pause_s * 2**try_index, outcome.retry_after_s or 0.0)
        if wait > _MAX_WAIT_IN_RUN_S:
            break
        log.warning("notification to %s failed (%s); trying again in %.1fs", channel.name, outcome.error, wait)
        sleep(wait)
    next_at = None
    if outcome.ok:
        status = DELIVERED
    elif outcome.permanent or row["kind"] == TEST or attempts >= settings.notify_max_attempts:
        status = FAILED  # a test message is answered at once and not retried; the others have run out of tries
    else:
        status = RETRYING
        delay = backoff_s(attempts, base=settings.notify_retry_backoff_s, cap=settings.notify_retry_max_backoff_s)
        next_at = now + timedelta(seconds=max(delay, outcome.retry_after_s or 0.0))
    notifications.record_attempt(
        conn, row["delivery_id"], status=status, attempts=attempts, error=outcome.error, next_at=next_at, now=now
    )
    if is_budget and row["kind"] == BUDGET_ALERT and message.data.get("alert_id") is not None:
        notifications.sync_budget_alert(
            conn, int(message.data["alert_id"]), status=status, attempts=attempts, error=outcome.error, now=now
        )
    setattr(stats, status, getattr(stats, status) + 1)
    if status == DELIVERED:
        log.info("notification %s delivered to %s (attempt %d)", row["dedup_key"], channel.name, attempts)
    elif status == RETRYING:
        log.warning(
            "notification %s to %s failed (attempt %d: %s); next try at %s",
            row["dedup_key"],
            channel.name,
            attempts,
            outcome.error,
            next_at.isoformat(timespec="seconds") if next_at else "-",
        )
    else:
        log.error(
            "notification %s to %s given up after %d attempt(s): %s",
            row["dedup_key"],
            channel.name,
            attempts,
            outcome.error,
        )
    return status


def send_test(engine: sa.Engine, settings: Settings, channel_key: str, *, http_post: HttpPost = requests.post) -> dict:
    """Send a test message to one channel now and return its delivery row (status, attempts, last error)."""
    with engine.connect() as conn:
        pages = {c.key: c for c in notifications.page_channels(conn)}
        channel = _resolve(conn, settings, channel_key, pages)
    if isinstance(channel, str):
        raise LookupError(f"cannot test {channel_key}: {channel}")
    base = settings.app_base_url.rstrip("/")
    message = Message(
        kind=TEST,
        title="Test notification from Costlake",
        lines=[f"This channel ({channel.name}) receives: {', '.join(sorted(channel.events)) or 'nothing yet'}."],
        facts=[("Sent at", utcnow().isoformat(timespec="seconds"))],
        link=f"{base}/sources",
        link_label="Open Sources & settings",
        data={"channel": channel.name},
    )
    with engine.begin() as conn:
        event_id = notifications.insert_event(
            conn, kind=TEST, dedup_key=f"test:{channel_key}:{uuid.uuid4().hex}", message=message, run_id=None
        )
        (delivery_id,) = notifications.insert_deliveries(conn, event_id, [channel], due=None)
    dispatch(engine, settings, delivery_id=delivery_id, http_post=http_post)
    return notifications.delivery(engine, delivery_id) or {}
