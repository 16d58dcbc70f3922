"""Notification channels: the four kinds, their validation, redaction, and the channels settings and budgets define."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from backend.config import Settings

WEBHOOK, SLACK, TEAMS, EMAIL = "webhook", "slack", "teams", "email"
KINDS = (WEBHOOK, SLACK, TEAMS, EMAIL)
KIND_LABELS = {WEBHOOK: "Webhook (JSON)", SLACK: "Slack", TEAMS: "Microsoft Teams", EMAIL: "Email (SMTP)"}

RUN_FAILED, STALE_DATA, ANOMALIES, BUDGET_ALERT, TEST = "run_failed", "stale_data", "anomalies", "budget_alert", "test"
EVENTS = (RUN_FAILED, STALE_DATA, ANOMALIES, BUDGET_ALERT)
EVENT_LABELS = {
    RUN_FAILED: "failed or abandoned runs",
    STALE_DATA: "stale data",
    ANOMALIES: "anomaly digest",
    BUDGET_ALERT: "budget thresholds",
    TEST: "test message",
}

# Where a channel comes from; part of its key in the delivery store.
SETTINGS, PAGE, BUDGET = "settings", "page", "budget"

_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")
_NAME = re.compile(r"^[\w .@()+-]{1,64}$")


class ChannelError(ValueError):
    """A channel setting that cannot work; the message says what to fix."""


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


def check_url(url: str, *, what: str) -> str:
    """A webhook URL as given, or ChannelError naming `what` and the fix."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ChannelError(
            f"{what} must be a full http(s) URL such as https://hooks.slack.com/services/… "
            f"(got {redact_url(url) or 'nothing'})"
        )
    return url


def parse_addresses(value: str | list[str]) -> list[str]:
    """Mail addresses from 'a@x.com, B <b@y.org>; c@z.net' (display names dropped)."""
    raw = value if isinstance(value, list) else [value]
    return [addr for _, addr in getaddresses([part.replace(";", ",") for part in raw]) if addr]


def check_addresses(value: str | list[str], *, what: str) -> list[str]:
    """Every address of a comma/semicolon separated list, or ChannelError naming the ones that are not addresses."""
    text = ", ".join(value) if isinstance(value, list) else (value or "")
    addresses, bad = [], []
    for piece in (p.strip() for p in text.replace(";", ",").split(",")):
        if not piece:
            continue
        found = [addr for _, addr in getaddresses([piece]) if addr]
        if len(found) == 1 and _ADDRESS.match(found[0]):
            addresses.append(found[0])
        else:
            bad.append(piece)
    if bad or not addresses:
        shown = ", ".join(bad) if bad else "nothing"
        raise ChannelError(f"{what} must be one or more mail addresses such as finops@example.com (got {shown})")
    return addresses


def check_events(events: list[str] | tuple[str, ...] | frozenset[str], *, what: str) -> frozenset[str]:
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise ChannelError(f"{what}: unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}")
    return frozenset(events)


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


def redact_url(url: str) -> str:
    """scheme://host[:port]/*** : a webhook's path and query are its token (Slack, Teams, most receivers)."""
    if not url:
        return ""
    parts = urlsplit(url.strip())
    if not parts.hostname:
        return "***"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    tail = "/***" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{tail}"


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


def smtp_ready(settings: Settings) -> str | None:
    """None when mail can be sent, else what to set."""
    missing = [name for name in ("smtp_host", "smtp_from") if not getattr(settings, name)]
    if missing:
        return f"set {' and '.join(m.upper() for m in missing)} to send mail"
    return None


def check_settings(settings: Settings) -> None:
    """Refuse notification settings that cannot work, naming the setting and the fix (called by Settings)."""
    for name in ("notify_webhook_url", "notify_slack_webhook_url", "notify_teams_webhook_url"):
        secret = getattr(settings, name)
        if secret is not None and secret.get_secret_value().strip():
            check_url(secret.get_secret_value(), what=name.upper())
    check_url(settings.app_base_url, what="APP_BASE_URL")
    check_events(settings.notify_events, what="NOTIFY_EVENTS")
    if settings.notify_email_to:
        check_addresses(settings.notify_email_to, what="NOTIFY_EMAIL_TO")
        if problem := smtp_ready(settings):
            raise ChannelError(f"NOTIFY_EMAIL_TO is set but mail cannot be sent: {problem}")
    if settings.smtp_from:
        try:
            (_,) = check_addresses(settings.smtp_from, what="SMTP_FROM")
        except (ChannelError, ValueError):
            raise ChannelError("SMTP_FROM must be a mail address such as 'Costlake <costlake@example.com>'") from None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    if bool(settings.smtp_user) != bool(password):
        raise ChannelError("set both SMTP_USER and SMTP_PASSWORD (or neither, for a relay without login)")
    if settings.smtp_user and settings.smtp_security == "none":
        raise ChannelError(
            "SMTP_USER/SMTP_PASSWORD need SMTP_SECURITY=starttls or ssl: the password would cross the network in clear"
        )
    if settings.app_env != "development" and password.strip().lower() in _placeholders():
        raise ChannelError(f"SMTP_PASSWORD is a placeholder value; set a real secret (APP_ENV={settings.app_env})")


def _placeholders() -> frozenset[str]:
    from backend.config import PLACEHOLDER_SECRETS

    return PLACEHOLDER_SECRETS
