"""Transports: POST JSON to a webhook, send a mail over SMTP (STARTTLS or TLS, login); each returns an Outcome."""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import requests

from backend.notify.channels import parse_addresses, scrub

if TYPE_CHECKING:
    from backend.config import Settings

log = logging.getLogger(__name__)

HttpPost = Callable[..., Any]


@dataclass(frozen=True)
class Outcome:
    """One attempt: delivered, or the error (scrubbed of secrets), whether retrying can help, and any Retry-After."""

    ok: bool
    error: str | None = None
    permanent: bool = False
    retry_after_s: float | None = None


DELIVERED = Outcome(ok=True)


class _RedactWebhookUrls(logging.Filter):
    """urllib3 logs each request line at DEBUG, path included: a webhook's path is its token."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls:
            text = record.getMessage()
            clean = scrub(text, list(self.urls))
            if clean != text:
                record.msg, record.args = clean, ()
        return True


_REDACT = _RedactWebhookUrls()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACT)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    timeout: float,
    http_post: HttpPost = requests.post,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """POST `body`; 2xx is delivered, 408/429/5xx and network errors are worth retrying, other 4xx are not."""
    _REDACT.urls.add(url)
    try:
        response = http_post(url, json=body, timeout=timeout, headers=headers or {})
    except requests.RequestException as exc:
        return Outcome(False, scrub(f"{type(exc).__name__}: {exc}", [url]))
    status = response.status_code
    if status < 300:
        return DELIVERED
    # Slack and Teams say what is wrong in a short body (no_service, invalid_payload, channel_is_archived).
    said = (getattr(response, "text", "") or "").strip().splitlines()
    error = f"HTTP {status}" + (f": {said[0][:200]}" if said else "")
    error = scrub(error, [url])
    if status in (408, 429) or status >= 500:
        return Outcome(False, error, retry_after_s=_retry_after(response.headers.get("Retry-After")))
    return Outcome(False, error, permanent=True)


def smtp_tls_context(settings: Settings) -> ssl.SSLContext:
    """Verified TLS (hostname and chain), against SMTP_CA_FILE when set (an internal relay's own CA)."""
    return ssl.create_default_context(cafile=settings.smtp_ca_file or None)


def send_mail(settings: Settings, mail: EmailMessage, *, timeout: float | None = None) -> Outcome:
    """Deliver `mail` to its To addresses through SMTP_HOST; login with SMTP_USER / SMTP_PASSWORD when set."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    secrets = [password] if password else []
    timeout = timeout or settings.notify_timeout_s
    host, port = settings.smtp_host, settings.smtp_port
    if not host:
        return Outcome(False, "SMTP_HOST is not set", permanent=True)
    try:
        if settings.smtp_security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=smtp_tls_context(settings))
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            client.ehlo()
            if settings.smtp_security == "starttls":
                if not client.has_extn("starttls"):
                    return Outcome(
                        False,
                        f"{host}:{port} does not offer STARTTLS; use SMTP_SECURITY=ssl (port 465) or a relay that does",
                    )
                client.starttls(context=smtp_tls_context(settings))
                client.ehlo()
            if settings.smtp_user:
                client.login(settings.smtp_user, password)
            refused = client.send_message(mail, from_addr=parse_addresses(str(mail["From"]))[0])
        if refused:
            shown = ", ".join(
                f"{addr} ({code} {msg.decode(errors='replace')})" for addr, (code, msg) in refused.items()
            )
            return Outcome(False, scrub(f"refused recipient(s): {shown}", secrets), permanent=True)
        return DELIVERED
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome(False, scrub(f"login refused ({exc.smtp_code}): check SMTP_USER and SMTP_PASSWORD", secrets))
    except smtplib.SMTPRecipientsRefused as exc:
        shown = ", ".join(f"{addr} ({code})" for addr, (code, _) in exc.recipients.items())
        return Outcome(False, f"refused recipient(s): {shown}", permanent=True)
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        # 4xx is the server asking to try later; 5xx is a refusal that a retry would only repeat.
        return Outcome(False, scrub(f"SMTP {exc.smtp_code}: {text}", secrets), permanent=exc.smtp_code >= 500)
    except ssl.SSLCertVerificationError as exc:
        return Outcome(False, f"TLS certificate of {host} not trusted ({exc.verify_message}); set SMTP_CA_FILE")
    except (smtplib.SMTPException, OSError) as exc:  # refused connection, timeout, TLS handshake
        return Outcome(False, scrub(f"{type(exc).__name__}: {exc}", secrets))
