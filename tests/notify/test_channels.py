"""Channel settings are refused with what to fix, secrets are masked, and each format keeps to its receiver's limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.notify.channels import (
    EMAIL,
    SLACK,
    TEAMS,
    WEBHOOK,
    check_addresses,
    guess_kind,
    redact_url,
    scrub,
    settings_channels,
)
from backend.notify.render import Item, Message, render_email, render_slack, render_teams, render_webhook
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"notify_slack_webhook_url": "hooks.slack.com/services/T/B/x"}, "NOTIFY_SLACK_WEBHOOK_URL must be a full"),
        ({"notify_webhook_url": "ftp://example.com/x"}, "NOTIFY_WEBHOOK_URL must be a full http(s) URL"),
        ({"app_base_url": "costlake.example.com"}, "APP_BASE_URL must be a full http(s) URL"),
        ({"notify_events": "run_failed,everything"}, "NOTIFY_EVENTS: unknown event(s) everything"),
        ({"notify_email_to": "finops@example.com"}, "NOTIFY_EMAIL_TO is set but mail cannot be sent: set SMTP_HOST"),
        (
            {"notify_email_to": "finops@example.com, nobody", "smtp_host": "smtp", "smtp_from": "c@example.com"},
            "NOTIFY_EMAIL_TO must be one or more mail addresses such as finops@example.com (got nobody)",
        ),
        ({"smtp_user": "me"}, "set both SMTP_USER and SMTP_PASSWORD"),
        ({"smtp_user": "me", "smtp_password": "pw-123456", "smtp_security": "none"}, "need SMTP_SECURITY=starttls"),
        ({"smtp_security": "tls"}, "smtp_security"),
        ({"smtp_from": "not an address"}, "SMTP_FROM must be a mail address"),
    ],
)
def test_bad_notification_settings_are_refused_naming_the_fix(tmp_path, overrides, says):
    with pytest.raises(ValidationError) as err:
        make_settings(tmp_path, **overrides)
    assert says in str(err.value)


def test_placeholder_smtp_password_is_refused_outside_development(tmp_path):
    with pytest.raises(ValidationError, match="SMTP_PASSWORD is a placeholder"):
        make_settings(tmp_path, smtp_user="me", smtp_password="changeme", smtp_host="smtp")
    make_settings(tmp_path, app_env="development", smtp_user="me", smtp_password="changeme", smtp_host="smtp")


def test_settings_channels_and_what_may_be_shown(tmp_path):
    settings = make_settings(
        tmp_path,
        notify_slack_webhook_url="https://hooks.slack.com/services/T1/B2/S3CRET",
        notify_teams_webhook_url="https://prod-1.westeurope.logic.azure.com/workflows/abc?sig=S1G",
        notify_email_to="FinOps <finops@example.com>; ops@example.com",
        notify_events="run_failed,stale_data",
        smtp_host="smtp.example.com",
        smtp_from="costlake@example.com",
        smtp_user="mailer",
        smtp_password="pw-S3CRET",
    )
    channels = {c.kind: c for c in settings_channels(settings)}
    assert set(channels) == {SLACK, TEAMS, EMAIL}
    assert channels[EMAIL].recipients == ["finops@example.com", "ops@example.com"]
    assert channels[SLACK].events == frozenset({"run_failed", "stale_data"})
    assert channels[SLACK].display_target == "https://hooks.slack.com/***"
    assert "S3CRET" not in repr(channels[SLACK]) and "S1G" not in repr(channels[TEAMS])
    view = settings.public_view()
    assert view["notify_slack_webhook_url"] == "***" and view["smtp_password"] == "***"
    assert "S3CRET" not in str(view) and "S1G" not in str(view)


def test_redaction_and_scrubbing():
    url = "https://hooks.slack.com/services/T1/B2/S3CRET?x=1"
    assert redact_url(url) == "https://hooks.slack.com/***"
    assert redact_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    error = "HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: /services/T1/B2/S3CRET?x=1"
    assert "S3CRET" not in scrub(error, [url])
    assert scrub("login pw-S3CRET refused", ["pw-S3CRET"]) == "login *** refused"
    assert guess_kind("https://hooks.slack.com/services/x") == SLACK
    assert guess_kind("https://contoso.webhook.office.com/webhookb2/x") == TEAMS
    assert guess_kind("https://alerts.example.com/costlake") == WEBHOOK
    assert check_addresses("a@x.org;B <b@y.org>", what="x") == ["a@x.org", "b@y.org"]


def _digest() -> Message:
    items = [
        Item(f"member {i} <&>", [f"line {i}"], [("k", "v")], f"https://c.example/a?anomaly={i}", "Mark")
        for i in range(45)
    ]
    return Message("anomalies", "45 new cost anomalies", "warning", ["Largest first."], items=items,
                   link="https://c.example/anomalies", footer="Costlake")  # fmt: skip


def test_slack_payload_escapes_and_stays_within_its_limits():
    body = render_slack(_digest())
    assert len(body["blocks"]) <= 50
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert "member 0 &lt;&amp;&gt;" in sections[1]["text"]["text"]
    assert "<https://c.example/a?anomaly=0|Mark>" in sections[1]["text"]["text"]
    long = Message("run_failed", "t", lines=["x" * 5000])
    assert all(len(b["text"]["text"]) <= 3000 for b in render_slack(long)["blocks"] if b["type"] == "section")


def test_teams_card_and_generic_json_and_email():
    card = render_teams(_digest())["attachments"][0]["content"]
    containers = [b for b in card["body"] if b["type"] == "Container"]
    assert len(containers) == 45 and containers[0]["items"][-1]["actions"][0]["url"].endswith("anomaly=0")
    generic = render_webhook(_digest(), event_id=7, dedup_key="anomalies:r1", created_at="2026-12-02T00:00:00+00:00")
    assert generic["event_id"] == 7 and generic["items"][1]["url"].endswith("anomaly=1")
    mail = render_email(_digest(), sender="c@example.com", recipients=["a@x.org"], event_id=7)
    html = mail.get_body(("html",)).get_content()
    assert "member 0 &lt;&amp;&gt;" in html and 'href="https://c.example/a?anomaly=0"' in html
    assert Message.from_json(_digest().to_json()) == _digest()  # what a retry sends is what was queued
