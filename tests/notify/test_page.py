"""The Notifications section of Sources & settings, run headlessly (AppTest) against the real runtime and receivers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.auth import Principal, Role, local_principal
from backend.mart import notifications
from backend.notify import admin
from backend.notify.channels import ChannelError
from tests.notify.conftest import deliveries

# The page fixtures: a real runtime (test Postgres, Tansu, local lake) patched into app.context.
from tests.ui.conftest import app_runtime, app_server, page, pipeline, texts, ui_settings  # noqa: F401

pytestmark = pytest.mark.slow


def test_channels_are_listed_tested_added_and_deliveries_shown(pipeline, http_receiver):  # noqa: F811
    owner = pipeline.engine
    notifications.add_channel(owner, name="finops-slack", kind="slack", target=http_receiver.hook("S3CRET-token"))
    at = page("sources").run()
    assert not at.exception
    shown = texts(at)
    assert "Notifications" in shown and "**finops-slack** · Slack · `" in shown
    assert "S3CRET-token" not in shown  # only the host of a webhook is ever drawn

    next(b for b in at.button if b.key.startswith("ntf_test_page:")).click().run()
    assert not at.exception
    assert any("Test delivered to finops-slack" in s.value for s in at.success)
    assert http_receiver.received[-1].body["text"].startswith("Test notification from Costlake")
    frame = next(d.value for d in at.dataframe if "attempts" in d.value.columns)
    assert list(frame["channel"]) == ["finops-slack"] and list(frame["status"]) == ["✅ delivered"]

    # A malformed channel is refused with what to fix; nothing is stored.
    at.text_input(key="ntf_name").input("ops hook")
    at.text_input(key="ntf_target").input("example.com/hook")
    next(b for b in at.button if b.label == "Add channel").click().run()
    assert any("Channel not added" in e.value and "must be a full http(s) URL" in e.value for e in at.error)
    assert [c.name for c in notifications.page_channels(owner)] == ["finops-slack"]

    at.text_input(key="ntf_target").input(http_receiver.hook("ops"))
    next(b for b in at.button if b.label == "Add channel").click().run()
    assert not at.exception
    assert sorted(c.name for c in notifications.page_channels(owner)) == ["finops-slack", "ops hook"]
    with owner.connect() as conn:  # audited with the actor, without the URL
        audit = conn.execute(sa.text("SELECT action, detail::text FROM ops.user_audit ORDER BY 1")).all()
    assert [a for a, _ in audit] == ["notify.channel.add", "notify.channel.test"]
    assert all(http_receiver.url not in detail and "hooks" not in detail for _, detail in audit)
    assert len(deliveries(owner)) == 1


def test_only_an_admin_changes_channels(mart_settings, owner, http_receiver):
    viewer = Principal(email="v@example.com", name="v", role=Role.viewer)
    from backend.auth import PermissionDenied

    with pytest.raises(PermissionDenied, match="needs the admin role"):
        admin.add(mart_settings, owner, actor=viewer, name="x", kind="webhook", target=http_receiver.hook(), events=[])
    with pytest.raises(ChannelError, match="choose at least one event"):
        admin.add(mart_settings, owner, actor=local_principal(), name="x", kind="webhook", target=http_receiver.hook(),
                  events=[])  # fmt: skip
    with pytest.raises(ChannelError, match="set SMTP_HOST and SMTP_FROM"):
        admin.add(mart_settings, owner, actor=local_principal(), name="mail", kind="email", target="a@example.com",
                  events=["run_failed"])  # fmt: skip
    channel_id = admin.add(
        mart_settings, owner, actor=local_principal(), name="x", kind="webhook", target=http_receiver.hook(),
        events=["run_failed"],
    )  # fmt: skip
    with pytest.raises(PermissionDenied):
        admin.remove(owner, channel_id, actor=viewer)
    with pytest.raises(PermissionDenied):
        admin.test(mart_settings, owner, f"page:{channel_id}", actor=viewer)
    assert http_receiver.received == []
