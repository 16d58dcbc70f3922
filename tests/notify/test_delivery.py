"""Deliveries to real local receivers: every channel kind's payload, retries across pipeline runs, dedup, give-up."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from backend.lake import lake_from_settings
from backend.lake.storage import lake_location
from backend.mart import notifications
from backend.mart.run_records import StepResult
from backend.notify.channels import RUN_FAILED, ChannelError
from backend.notify.dispatch import backoff_s, dispatch, enqueue, send_test
from backend.notify.render import Message
from backend.pipeline.runner import PipelineContext, run_pipeline
from backend.runtime import Endpoints
from tests.conftest import make_settings
from tests.notify.conftest import SMTP_PASSWORD, SMTP_USER, deliveries

pytestmark = pytest.mark.slow  # a migrated database per test, receivers on loopback

BASE = "https://costlake.example.com/app"


def _ok(ctx: PipelineContext) -> StepResult:
    return StepResult(rows_in=1, rows_out=1)


def _boom(ctx: PipelineContext) -> StepResult:
    raise RuntimeError("source unreachable: check AZURE_TENANT_ID\n  and a second line nobody needs in a chat")


REGISTRY = {"ok": _ok, "boom": _boom}


def _run(settings, engine, steps):
    def factory(run_id: str) -> PipelineContext:
        endpoints = Endpoints(settings.database_url, "", lake_location(settings))
        return PipelineContext(settings, endpoints, engine, lake_from_settings(settings), run_id, ["inbox"])

    return run_pipeline(factory, steps=steps, registry=REGISTRY, trigger="test")


def _settings(tmp_path, mart_url, **overrides):
    values = {"database_url": mart_url, "lake_uri": str(tmp_path / "lake"), "app_base_url": BASE}
    values.update(overrides)
    return make_settings(tmp_path, **values)


def test_every_channel_kind_gets_its_own_format(tmp_path, mart_url, owner, http_receiver, smtp_receiver, caplog):
    caplog.set_level(logging.DEBUG)
    settings = _settings(
        tmp_path,
        mart_url,
        notify_webhook_url=http_receiver.hook("generic-T0K3N"),
        notify_slack_webhook_url=http_receiver.hook("T000/B000/slack-S3CRET"),
        notify_teams_webhook_url=http_receiver.hook("teams-S3CRET"),
        notify_email_to="FinOps <finops@example.com>; oncall@example.com",
        smtp_host=smtp_receiver.host,
        smtp_port=smtp_receiver.port,
        smtp_user=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_from="Costlake <costlake@example.com>",
        smtp_security="starttls",
        smtp_ca_file=str(smtp_receiver.ca_file),
    )
    summary = _run(settings, owner, ["ok", "boom"])
    assert summary.status == "failed"
    link = f"{BASE}/pipeline?run={summary.run_id}"
    by_path = {r.path: r for r in http_receiver.received}
    assert len(http_receiver.received) == 3

    generic = by_path["/hooks/generic-T0K3N"].body
    assert generic["event"] == RUN_FAILED and generic["source"] == "costlake"
    assert generic["title"] == "Pipeline run failed at step boom"
    assert generic["url"] == link
    assert generic["data"]["step"] == "boom" and generic["data"]["status"] == "failed"
    # The error's first line only: a chat message is not a traceback.
    assert generic["data"]["error"] == "RuntimeError: source unreachable: check AZURE_TENANT_ID"
    assert "second line" not in generic["text"]
    assert generic["dedup_key"] == f"run:{summary.run_id}:failed"

    slack = by_path["/hooks/T000/B000/slack-S3CRET"].body
    assert slack["text"].startswith("Pipeline run failed at step boom")
    assert slack["blocks"][0]["type"] == "header"
    button = next(b for b in slack["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["url"] == link
    assert "check AZURE_TENANT_ID" in slack["blocks"][1]["text"]["text"]

    teams = by_path["/hooks/teams-S3CRET"].body
    assert teams["type"] == "message"
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and card["content"]["actions"][0]["url"] == link
    assert card["content"]["body"][0]["text"] == "Pipeline run failed at step boom"
    assert all(r.headers["Idempotency-Key"].startswith("costlake-") for r in http_receiver.received)

    (mail,) = smtp_receiver.mails
    assert mail.tls and mail.authenticated  # STARTTLS then login, as the receiver requires
    assert sorted(mail.rcpt_tos) == ["finops@example.com", "oncall@example.com"]
    assert mail.mail_from == "costlake@example.com"
    assert mail.message["Subject"] == "[Costlake] Pipeline run failed at step boom"
    plain = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    assert link in plain and "Step" not in plain.splitlines()[0]
    assert f'href="{link}"' in html

    rows = deliveries(owner)
    assert [(r["channel"], r["status"], r["attempts"]) for r in rows] == [
        ("settings:webhook", "delivered", 1),
        ("settings:slack", "delivered", 1),
        ("settings:teams", "delivered", 1),
        ("settings:email", "delivered", 1),
    ]
    # Tokens and the SMTP password never reach a log line.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")  # not the test server's
    for secret in ("generic-T0K3N", "slack-S3CRET", "teams-S3CRET", SMTP_PASSWORD):
        assert secret not in logged


def test_a_receiver_that_fails_twice_is_retried_at_later_runs(tmp_path, mart_url, owner, http_receiver):
    http_receiver.script = [503, 503]
    settings = _settings(
        tmp_path,
        mart_url,
        notify_webhook_url=http_receiver.hook(),
        notify_retries_in_run=0,  # one attempt per run, so each retry belongs to a later run
        notify_retry_backoff_s=1.0,
    )
    first = _run(settings, owner, ["boom"])
    assert first.status == "failed"
    (row,) = deliveries(owner)
    assert (row["status"], row["attempts"], row["last_error"]) == ("retrying", 1, "HTTP 503: no_service")
    assert row["next_attempt_at"] - row["last_attempt_at"] == timedelta(seconds=1)

    # A run at once: the delivery is not due yet, nothing is sent, and the run itself is green.
    assert _run(settings, owner, ["ok"]).status == "succeeded"
    assert len(http_receiver.received) == 1 and deliveries(owner)[0]["attempts"] == 1

    time.sleep(1.1)
    second = _run(settings, owner, ["ok"])
    assert second.status == "succeeded"  # a failing receiver never fails a run
    (row,) = deliveries(owner)
    assert (row["status"], row["attempts"], row["last_error"]) == ("retrying", 2, "HTTP 503: no_service")
    assert row["next_attempt_at"] - row["last_attempt_at"] == timedelta(seconds=2)  # the backoff doubled

    time.sleep(2.1)
    third = _run(settings, owner, ["ok"])
    assert third.status == "succeeded"
    (row,) = deliveries(owner)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    assert row["last_error"] == "HTTP 503: no_service"  # what the retries were for stays visible
    assert row["delivered_at"] is not None and row["next_attempt_at"] is None
    # Three POSTs of one message, one per run, all with the same idempotency key; later runs add none.
    assert len(http_receiver.received) == 3
    assert len({r.headers["Idempotency-Key"] for r in http_receiver.received}) == 1
    assert {r.body["dedup_key"] for r in http_receiver.received} == {f"run:{first.run_id}:failed"}
    _run(settings, owner, ["ok"])
    assert len(http_receiver.received) == 3
    with owner.connect() as conn:
        log_lines = conn.execute(
            sa.text("SELECT message FROM ops.pipeline_logs WHERE run_id = :r"), {"r": second.run_id}
        ).scalars()
        assert any("failed (attempt 2: HTTP 503" in m for m in log_lines)  # the run's log says so


def test_mail_refused_for_now_twice_is_retried_and_recorded(tmp_path, mart_url, owner, smtp_receiver):
    smtp_receiver.refuse_next = ["451 4.3.0 Mailbox busy, try later", "451 4.3.0 Mailbox busy, try later"]
    settings = _settings(
        tmp_path,
        mart_url,
        notify_email_to="finops@example.com",
        smtp_host=smtp_receiver.host,
        smtp_port=smtp_receiver.port,
        smtp_user=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_from="costlake@example.com",
        smtp_ca_file=str(smtp_receiver.ca_file),
        notify_retries_in_run=0,
        notify_retry_backoff_s=60,
    )
    t0 = datetime.now(UTC)
    with owner.begin() as conn:
        enqueue(
            conn, settings, kind=RUN_FAILED, dedup_key="mail", message=Message(RUN_FAILED, "x"), run_id=None, now=t0
        )
    assert dispatch(owner, settings, now=t0).retrying == 1
    assert dispatch(owner, settings, now=t0 + timedelta(seconds=30)).as_dict() == {
        "delivered": 0,
        "retrying": 0,
        "failed": 0,
        "cancelled": 0,
    }  # not due before its backoff
    assert dispatch(owner, settings, now=t0 + timedelta(seconds=61)).retrying == 1
    (row,) = deliveries(owner)
    assert (row["attempts"], row["last_error"]) == (2, "SMTP 451: 4.3.0 Mailbox busy, try later")
    assert row["next_attempt_at"] == t0 + timedelta(seconds=61 + 120)
    assert dispatch(owner, settings, now=t0 + timedelta(seconds=200)).delivered == 1
    assert len(smtp_receiver.mails) == 1 and deliveries(owner)[0]["attempts"] == 3


def test_wrong_smtp_password_is_recorded_without_the_password(tmp_path, mart_url, owner, smtp_receiver):
    settings = _settings(
        tmp_path,
        mart_url,
        notify_email_to="finops@example.com",
        smtp_host=smtp_receiver.host,
        smtp_port=smtp_receiver.port,
        smtp_user=SMTP_USER,
        smtp_password="not-the-Password-42",
        smtp_from="costlake@example.com",
        smtp_ca_file=str(smtp_receiver.ca_file),
        notify_retries_in_run=0,
    )
    with owner.begin() as conn:
        enqueue(conn, settings, kind=RUN_FAILED, dedup_key="k", message=Message(RUN_FAILED, "x"), run_id=None)
    dispatch(owner, settings)
    (row,) = deliveries(owner)
    assert row["status"] == "retrying" and "check SMTP_USER and SMTP_PASSWORD" in row["last_error"]
    assert "not-the-Password-42" not in row["last_error"] and not smtp_receiver.mails


def test_untrusted_smtp_certificate_says_what_to_set(tmp_path, mart_url, owner, smtp_receiver):
    settings = _settings(
        tmp_path,
        mart_url,
        notify_email_to="finops@example.com",
        smtp_host=smtp_receiver.host,
        smtp_port=smtp_receiver.port,
        smtp_from="costlake@example.com",
        notify_retries_in_run=0,
    )  # no SMTP_CA_FILE: the self-signed certificate is not trusted
    with owner.begin() as conn:
        enqueue(conn, settings, kind=RUN_FAILED, dedup_key="k", message=Message(RUN_FAILED, "x"), run_id=None)
    dispatch(owner, settings)
    (row,) = deliveries(owner)
    assert row["status"] == "retrying" and "set SMTP_CA_FILE" in row["last_error"]


def test_client_errors_are_not_retried_and_attempts_run_out(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(
        tmp_path, mart_url, notify_webhook_url=http_receiver.hook(), notify_retries_in_run=0, notify_max_attempts=3
    )
    now = datetime.now(UTC)
    http_receiver.script = [404]
    with owner.begin() as conn:
        enqueue(
            conn, settings, kind=RUN_FAILED, dedup_key="gone", message=Message(RUN_FAILED, "a"), run_id=None, now=now
        )
    assert dispatch(owner, settings, now=now).failed == 1
    (row,) = deliveries(owner)
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "HTTP 404: no_service")

    http_receiver.script = [500] * 10
    with owner.begin() as conn:
        enqueue(
            conn, settings, kind=RUN_FAILED, dedup_key="down", message=Message(RUN_FAILED, "b"), run_id=None, now=now
        )
    for minutes in (0, 10, 60):
        dispatch(owner, settings, now=now + timedelta(minutes=minutes))
    row = deliveries(owner)[1]
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("failed", 3, None)
    dispatch(owner, settings, now=now + timedelta(days=1))
    assert deliveries(owner)[1]["attempts"] == 3  # given up for good


def test_in_run_retries_and_retry_after(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url, notify_webhook_url=http_receiver.hook(), notify_retries_in_run=2)
    http_receiver.script = [502, 503]
    with owner.begin() as conn:
        enqueue(conn, settings, kind=RUN_FAILED, dedup_key="a", message=Message(RUN_FAILED, "a"), run_id=None)
    assert dispatch(owner, settings, pause_s=0.01).delivered == 1
    assert deliveries(owner)[0]["attempts"] == 3

    # A receiver asking for two minutes gets them: the next try waits for a later run.
    http_receiver.script, http_receiver.retry_after = [429], "120"
    now = datetime.now(UTC)
    with owner.begin() as conn:
        enqueue(conn, settings, kind=RUN_FAILED, dedup_key="b", message=Message(RUN_FAILED, "b"), run_id=None, now=now)
    dispatch(owner, settings, now=now, pause_s=0.01)
    row = deliveries(owner)[1]
    assert (row["status"], row["attempts"]) == ("retrying", 1)
    assert row["next_attempt_at"] >= now + timedelta(seconds=120)


def test_the_same_event_is_never_queued_or_sent_twice(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url, notify_webhook_url=http_receiver.hook())
    with owner.begin() as conn:
        first = enqueue(conn, settings, kind=RUN_FAILED, dedup_key="run:r1:failed", message=Message(RUN_FAILED, "a"),
                        run_id="r1")  # fmt: skip
        again = enqueue(conn, settings, kind=RUN_FAILED, dedup_key="run:r1:failed", message=Message(RUN_FAILED, "a"),
                        run_id="r1")  # fmt: skip
    assert first is not None and again is None
    dispatch(owner, settings)
    dispatch(owner, settings)
    assert len(http_receiver.received) == 1


def test_channels_that_do_not_take_an_event_get_nothing(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(
        tmp_path, mart_url, notify_webhook_url=http_receiver.hook(), notify_events="budget_alert,anomalies"
    )
    assert _run(settings, owner, ["boom"]).status == "failed"
    assert http_receiver.received == [] and deliveries(owner) == []
    with owner.connect() as conn:  # the event is still recorded: a channel added later gets no backlog
        assert conn.execute(sa.text("SELECT count(*) FROM ops.notification_events")).scalar() == 1


def test_page_channels_send_test_and_removal(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url)
    with pytest.raises(ChannelError, match="must be a full http"):
        notifications.add_channel(owner, name="bad", kind="slack", target="hooks.slack.com/services/x")
    with pytest.raises(ChannelError, match="mail addresses such as"):
        notifications.add_channel(owner, name="bad", kind="email", target="finops@example.com, not an address")
    with pytest.raises(ChannelError, match="unknown event"):
        notifications.add_channel(owner, name="bad", kind="webhook", target=http_receiver.hook(), events=["everything"])
    with pytest.raises(ChannelError, match="unknown channel kind"):
        notifications.add_channel(owner, name="bad", kind="pager", target=http_receiver.hook())
    assert notifications.page_channels(owner) == []  # nothing stored by a refusal

    good = notifications.add_channel(owner, name="finops-slack", kind="slack", target=http_receiver.hook("ok"))
    down = notifications.add_channel(
        owner, name="down", kind="webhook", target=http_receiver.hook("down"), events=["run_failed"]
    )
    with pytest.raises(ChannelError, match="exists"):
        notifications.add_channel(owner, name="finops-slack", kind="slack", target=http_receiver.hook("ok"))
    (shown,) = [c for c in notifications.page_channels(owner) if c.name == "finops-slack"]
    assert shown.display_target == f"{http_receiver.url}/***" and "ok" not in repr(shown)

    result = send_test(owner, settings, f"page:{good}")
    assert (result["status"], result["attempts"]) == ("delivered", 1)
    assert http_receiver.received[-1].body["blocks"][0]["text"]["text"].endswith("Test notification from Costlake")

    http_receiver.script = [500, 500]
    settings_one_try = _settings(tmp_path, mart_url, notify_retries_in_run=0)
    result = send_test(owner, settings_one_try, f"page:{down}")
    # A test is answered at once and never retried later.
    assert (result["status"], result["attempts"], result["last_error"]) == ("failed", 1, "HTTP 500: no_service")

    # A run's failure goes to both page channels ("down" takes run_failed only); delete "down" before it retries.
    _run(settings_one_try, owner, ["boom"])
    open_rows = [r for r in deliveries(owner) if r["kind"] == RUN_FAILED]
    assert {r["channel_name"]: r["status"] for r in open_rows} == {"finops-slack": "delivered", "down": "retrying"}
    notifications.delete_channel(owner, down, now=datetime.now(UTC))
    cancelled = [r for r in deliveries(owner) if r["channel_name"] == "down" and r["kind"] == RUN_FAILED]
    assert [(r["status"], r["last_error"]) for r in cancelled] == [("cancelled", "channel deleted")]
    with pytest.raises(LookupError, match="channel deleted"):
        send_test(owner, settings, f"page:{down}")


def test_the_reader_sees_deliveries_but_never_channel_targets(mart_settings, owner, reader, http_receiver):
    notifications.add_channel(owner, name="hook", kind="webhook", target=http_receiver.hook("S3CRET"))
    send_test(owner, mart_settings, f"page:{notifications.page_channels(owner)[0].key.split(':')[1]}")
    recent = notifications.recent_deliveries(reader)
    assert [(r["event"], r["channel"], r["status"]) for r in recent] == [("test", "hook", "delivered")]
    with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(sa.text("SELECT target FROM ops.notification_channels"))


def test_a_network_error_is_recorded_without_the_token(tmp_path, mart_url, owner):
    from backend.runtime.kafka import free_port

    url = f"http://127.0.0.1:{free_port()}/hooks/T0K3N-in-path?sig=SIGNATURE"
    settings = _settings(tmp_path, mart_url, notify_webhook_url=url, notify_retries_in_run=0, notify_timeout_s=2)
    with owner.begin() as conn:
        enqueue(conn, settings, kind=RUN_FAILED, dedup_key="k", message=Message(RUN_FAILED, "x"), run_id=None)
    dispatch(owner, settings)
    (row,) = deliveries(owner)
    assert row["status"] == "retrying" and row["last_error"].startswith("ConnectionError")
    assert "T0K3N" not in row["last_error"] and "SIGNATURE" not in row["last_error"]


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(n, base=300, cap=3600) for n in range(0, 6)] == [0, 300, 600, 1200, 2400, 3600]


def test_command_line_lists_tests_and_sends_what_is_due(settings, http_receiver, capsys):
    from backend.notify.__main__ import main

    settings = settings.model_copy(update={"notify_webhook_url": SecretStr(http_receiver.hook("cli-T0K3N"))})
    assert main(["channels"], settings=settings) == 0
    listed = capsys.readouterr().out
    assert "settings:webhook" in listed and f"{http_receiver.url}/***" in listed and "cli-T0K3N" not in listed
    assert main(["test", "settings:webhook"], settings=settings) == 0
    assert "settings:webhook: delivered after 1 attempt(s)" in capsys.readouterr().out
    http_receiver.script = [500, 500, 500]
    assert main(["test", "settings:webhook"], settings=settings) == 1
    assert "failed after 2 attempt(s) — HTTP 500: no_service" in capsys.readouterr().out
    assert main(["test", "settings:slack"], settings=settings) == 2  # not configured
    assert main(["deliveries"], settings=settings) == 0
    assert capsys.readouterr().out.count("webhook (settings)") == 2
