"""Notification channels: the four kinds, their validation, redaction, and the channels settings and budgets define."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from backend.notify.rules import (
    ANOMALIES,
    BUDGET_ALERT,
    EVENTS,
    RUN_FAILED,
    STALE_DATA,
    TEST,
    ChannelError,
    check_addresses,
    check_url,
    parse_addresses,
    redact_url,
)

if TYPE_CHECKING:
    from backend.config import Settings

WEBHOOK, SLACK, TEAMS, EMAIL = "webhook", "slack", "teams", "email"
KINDS = (WEBHOOK, SLACK, TEAMS, EMAIL)
KIND_LABELS = {WEBHOOK: "Webhook (JSON)", SLACK: "Slack", TEAMS: "Microsoft Teams", EMAIL: "Email (SMTP)"}

EVENT_LABELS = {
    RUN_FAILED: "failed or abandoned runs",
    STALE_DATA: "stale data",
    ANOMALIES: "anomaly digest",
    BUDGET_ALERT: "budget thresholds",
    TEST: "test message",
}

# Where a channel comes from; part of its key in the delivery store.
SETTINGS, PAGE, BUDGET = "settings", "page", "budget"

_NAME = re.compile(r"^[\w .@()+-]{1,64}$")


@dataclass(frozen=True)
class Channel:
    """Where a message goes. `target` (a URL that may embed a token, or mail addresses) never shows in repr or logs."""

    key: str  # stable id of the channel in the delivery store: settings:slack, page:<id>, budget:<id>
    name: str
    kind: str
    target: str = field(repr=False)
    events: frozenset[str] = frozenset(EVENTS)
    origin: str = SETTINGS
    enabled: bool = True

    @property
    def display_target(self) -> str:
        return display_target(self.kind, self.target)

    @property
    def recipients(self) -> list[str]:
        return parse_addresses(self.target) if self.kind == EMAIL else []

    def wants(self, event_kind: str) -> bool:
        return self.enabled and (event_kind == TEST or event_kind in self.events)


def check_target(kind: str, target: str, *, what: str = "the channel's target") -> str:
    """The target normalised for its kind: one URL for webhooks, a comma-separated address list for email."""
    if kind not in KINDS:
        raise ChannelError(f"unknown channel kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == EMAIL:
        return ", ".join(check_addresses(target, what=what))
    return check_url(target, what=what)


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise ChannelError("a channel name is 1-64 letters, digits, spaces or . @ ( ) + - _ (e.g. 'finops-slack')")
    return name


def display_target(kind: str, target: str) -> str:
    return target if kind == EMAIL else redact_url(target)


def scrub(text: str | None, secrets: list[str]) -> str | None:
    """An error text with every secret (a URL, its path and query, a password) replaced by ***."""
    if not text:
        return text
    pieces: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        pieces.add(secret)
        parts = urlsplit(secret)
        if parts.hostname:
            pieces.add(secret.rstrip("/"))
            if parts.path not in ("", "/"):
                pieces.add(parts.path + (f"?{parts.query}" if parts.query else ""))
                pieces.add(parts.path)
            if parts.query:
                pieces.add(parts.query)
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 4:  # a 1-3 character "secret" would blank out ordinary words
            text = text.replace(piece, redact_url(piece) if piece.startswith(("http://", "https://")) else "***")
    return text


def guess_kind(url: str) -> str:
    """A budget's own webhook URL speaks Slack's or Teams' format when it points at them, else generic JSON."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "hooks.slack.com":
        return SLACK
    if host.endswith((".webhook.office.com", ".logic.azure.com", ".api.powerplatform.com")):
        return TEAMS
    return WEBHOOK


def settings_channels(settings: Settings) -> list[Channel]:
    """The channels NOTIFY_* settings define (checked when the settings were read)."""
    events = frozenset(settings.notify_events)
    out: list[Channel] = []
    for kind, secret in (
        (WEBHOOK, settings.notify_webhook_url),
        (SLACK, settings.notify_slack_webhook_url),
        (TEAMS, settings.notify_teams_webhook_url),
    ):
        url = secret.get_secret_value().strip() if secret else ""
        if url:
            out.append(Channel(f"{SETTINGS}:{kind}", f"{kind} (settings)", kind, url, events, SETTINGS))
    if settings.notify_email_to:
        target = ", ".join(settings.notify_email_to)
        out.append(Channel(f"{SETTINGS}:{EMAIL}", "email (settings)", EMAIL, target, events, SETTINGS))
    return out


def budget_channel(budget_id: int, budget_name: str, url: str) -> Channel:
    """A budget's own webhook: its alerts only."""
    return Channel(
        f"{BUDGET}:{budget_id}",
        f"budget {budget_name!r} webhook",
        guess_kind(url),
        url,
        frozenset({BUDGET_ALERT}),
        BUDGET,
    )
