"""What the Notifications section of Sources & settings calls: every channel, adding and removing, tests, history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from backend.auth import Principal, Role, require
from backend.mart import notifications
from backend.mart.audit import record_now
from backend.notify.channels import (
    BUDGET,
    EMAIL,
    EVENT_LABELS,
    KIND_LABELS,
    PAGE,
    SETTINGS,
    Channel,
    ChannelError,
    settings_channels,
)
from backend.notify.dispatch import send_test, utcnow
from backend.notify.rules import smtp_ready

if TYPE_CHECKING:
    from backend.config import Settings


@dataclass(frozen=True)
class ChannelRow:
    """A channel as the page shows it: never the URL's token."""

    key: str
    name: str
    kind: str
    where: str
    events: str
    origin: str
    enabled: bool
    problem: str | None  # why it cannot deliver now (email without SMTP settings)
    channel_id: int | None


def channel_rows(settings: Settings, owner: sa.Engine) -> list[ChannelRow]:
    """Settings' channels, then the page's, then each budget's own webhook (owner engine)."""
    rows = []
    origins = {SETTINGS: "settings (NOTIFY_*)", PAGE: "added here", BUDGET: "budget (Budgets page)"}
    channels: list[Channel] = (
        settings_channels(settings) + notifications.page_channels(owner) + notifications.budget_channels(owner)
    )
    for c in channels:
        rows.append(
            ChannelRow(
                key=c.key,
                name=c.name,
                kind=KIND_LABELS.get(c.kind, c.kind),
                where=c.display_target,
                events=", ".join(EVENT_LABELS[e] for e in sorted(c.events)),
                origin=origins[c.origin],
                enabled=c.enabled,
                problem=smtp_ready(settings) if c.kind == EMAIL else None,
                channel_id=int(c.key.split(":", 1)[1]) if c.origin == PAGE else None,
            )
        )
    return rows


def add(settings: Settings, owner: sa.Engine, *, actor: Principal, name: str, kind: str, target: str,
        events: list[str]) -> int:  # fmt: skip
    """A page channel (admin role); ChannelError says what to fix (nothing is stored then)."""
    require(actor, Role.admin, "Adding a notification channel")
    if kind == EMAIL and (problem := smtp_ready(settings)):
        raise ChannelError(f"an email channel cannot send yet: {problem} (in .env or the environment), then restart")
    return notifications.add_channel(owner, name=name, kind=kind, target=target, events=events, actor=actor)


def remove(owner: sa.Engine, channel_id: int, *, actor: Principal) -> None:
    require(actor, Role.admin, "Deleting a notification channel")
    notifications.delete_channel(owner, channel_id, now=utcnow(), actor=actor)


def enable(owner: sa.Engine, channel_id: int, enabled: bool, *, actor: Principal) -> None:
    require(actor, Role.admin, "Changing a notification channel")
    notifications.set_channel_enabled(owner, channel_id, enabled, now=utcnow(), actor=actor)


def test(settings: Settings, owner: sa.Engine, key: str, *, actor: Principal) -> dict[str, Any]:
    """A test message now (admin role: it calls out to the channel); audited with its outcome."""
    require(actor, Role.admin, "Sending a test notification")
    result = send_test(owner, settings, key)
    record_now(owner, actor, "notify.channel.test", key, {"status": result.get("status")})
    return result


def recent(engine: sa.Engine, *, limit: int = 50) -> list[dict[str, Any]]:
    return notifications.recent_deliveries(engine, limit=limit)
