"""Notification settings' rules: pure checks of webhook URLs, mail addresses and event names.

A leaf module (nothing first-party at run time), so Settings can refuse a bad NOTIFY_* value at start with
the same checks the Notifications page and the channels use (backend/notify/channels.py builds on them).
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from backend.config import Settings

RUN_FAILED, STALE_DATA, ANOMALIES, BUDGET_ALERT, TEST = "run_failed", "stale_data", "anomalies", "budget_alert", "test"
EVENTS = (RUN_FAILED, STALE_DATA, ANOMALIES, BUDGET_ALERT)

_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


class ChannelError(ValueError):
    """A channel setting that cannot work; the message says what to fix."""


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


def smtp_ready(settings: Settings) -> str | None:
    """None when mail can be sent, else what to set."""
    missing = [name for name in ("smtp_host", "smtp_from") if not getattr(settings, name)]
    if missing:
        return f"set {' and '.join(m.upper() for m in missing)} to send mail"
    return None


def check_settings(settings: Settings, *, placeholders: frozenset[str]) -> None:
    """Refuse notification settings that cannot work, naming the setting and the fix (called by Settings,
    which passes the placeholder secrets it refuses everywhere)."""
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
    if settings.app_env != "development" and password.strip().lower() in placeholders:
        raise ChannelError(f"SMTP_PASSWORD is a placeholder value; set a real secret (APP_ENV={settings.app_env})")
