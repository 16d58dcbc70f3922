"""The Notifications section of Sources & settings: channels, a send-test button each, adding channels, deliveries."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from app import auth, fmt, ui
from app.context import get_owner, get_reader, settings
from backend.notify import admin
from backend.notify.channels import EMAIL, EVENT_LABELS, EVENTS, KIND_LABELS, KINDS, ChannelError

log = logging.getLogger(__name__)

_STATUS_ICON = {"delivered": "✅", "retrying": "🔁", "pending": "⏳", "failed": "❌", "cancelled": "⏹️"}


def render() -> None:
    """Draw the section; every failure is shown as a message, never a stack trace."""
    st.subheader("Notifications")
    st.caption(
        "Failed or abandoned runs, stale data, one digest of new anomalies per run and budget thresholds go to the "
        "channels below. A delivery that fails is tried again at the next runs with a growing pause "
        "(NOTIFY_RETRY_BACKOFF_S, up to NOTIFY_MAX_ATTEMPTS tries). Webhook URLs are secrets: only their host is shown."
    )
    current = settings()
    owner = get_owner()
    # Changing or testing channels is an admin's (decision 13); the backend checks it again.
    principal = auth.current_principal()
    can_edit = principal.can(auth.Role.admin)
    rows = ui.guard("read the notification channels", admin.channel_rows, current, owner)
    if rows is not None:
        _channels(rows, current, owner, principal)
    if can_edit:
        _add_form(current, owner, principal)
    else:
        auth.role_note(principal, auth.Role.admin, "Adding, testing or removing channels")
    _deliveries()


def _channels(rows: list[admin.ChannelRow], current, owner, principal) -> None:
    can_edit = principal.can(auth.Role.admin)
    if not rows:
        st.info(
            "No channel yet. Set NOTIFY_SLACK_WEBHOOK_URL, NOTIFY_TEAMS_WEBHOOK_URL, NOTIFY_WEBHOOK_URL or "
            "NOTIFY_EMAIL_TO (with SMTP_*) in `.env`, or add one below.",
            icon="🔔",
        )
        return
    for row in rows:
        with st.container(border=True):
            left, right = st.columns([4, 1])
            with left:
                state = "" if row.enabled else " · disabled"
                st.markdown(f"**{row.name}** · {row.kind} · `{row.where}`{state}")
                st.caption(f"Receives: {row.events or 'nothing'} · from {row.origin}")
                if row.problem:
                    st.warning(f"Cannot send: {row.problem}.", icon="⚠️")
            with right:
                if can_edit and row.enabled and st.button("Send test", key=f"ntf_test_{row.key}"):
                    result = ui.guard(
                        f"send a test to {row.name}", admin.test, current, owner, row.key, actor=principal
                    )
                    st.session_state[f"ntf_result_{row.key}"] = result
                if can_edit and row.channel_id is not None:
                    label = "Disable" if row.enabled else "Enable"
                    if st.button(label, key=f"ntf_toggle_{row.key}") and _act(
                        f"change {row.name}", admin.enable, owner, row.channel_id, not row.enabled, actor=principal
                    ):
                        st.rerun()
                    if st.button("Delete", key=f"ntf_delete_{row.key}") and _act(
                        f"delete {row.name}", admin.remove, owner, row.channel_id, actor=principal
                    ):
                        st.rerun()
            result = st.session_state.get(f"ntf_result_{row.key}")
            if result:
                if result.get("status") == "delivered":
                    st.success(f"Test delivered to {row.name}.", icon="✅")
                else:
                    st.error(
                        f"Test to {row.name} failed: {result.get('last_error') or result.get('status')}", icon="❌"
                    )


def _act(what: str, fn, *args, **kwargs) -> bool:
    """True when `fn` ran; a failure is shown by ui.guard (and the page is not rerun over the message)."""

    def run() -> bool:
        fn(*args, **kwargs)
        return True

    return bool(ui.guard(what, run))


def _add_form(current, owner, principal) -> None:
    with st.expander("Add a channel"), st.form("ntf_add", clear_on_submit=False):
        name = st.text_input("Name", placeholder="finops-slack", key="ntf_name")
        kind = st.selectbox("Kind", KINDS, format_func=lambda k: KIND_LABELS[k], key="ntf_kind")
        target = st.text_input(
            "Webhook URL, or mail addresses for email (comma separated)",
            type="password",  # a webhook URL is its token: not echoed on screen
            key="ntf_target",
        )
        chosen = st.multiselect(
            "Events", EVENTS, default=list(EVENTS), format_func=lambda e: EVENT_LABELS[e], key="ntf_events"
        )
        submitted = st.form_submit_button("Add channel")
    if not submitted:
        return
    try:
        admin.add(current, owner, actor=principal, name=name, kind=kind, target=target, events=chosen)
    except auth.PermissionDenied as exc:
        auth.refused(exc, target="notification channel")
        return
    except ChannelError as exc:
        # What to fix, and nothing stored: the form keeps what was typed.
        st.error(f"Channel not added: {exc}", icon="🚫")
        return
    except Exception as exc:
        log.exception("adding notification channel %r failed", name)
        st.error(f"Could not add the channel: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", icon="⚠️")
        return
    hint = " Mail goes through SMTP_HOST." if kind == EMAIL else ""
    st.success(f"Channel **{name.strip()}** added; use **Send test** to check it.{hint}", icon="🔔")
    st.rerun()


def _deliveries() -> None:
    st.markdown("**Recent deliveries**")
    recent = ui.guard("read the notification deliveries", admin.recent, get_reader(), limit=50)
    if recent is None:
        return
    if not recent:
        st.caption("Nothing sent yet.")
        return
    frame = pd.DataFrame(
        {
            "queued": [fmt.when(r["queued_at"]) for r in recent],
            "event": [EVENT_LABELS.get(r["event"], r["event"]) for r in recent],
            "subject": [r["subject"] for r in recent],
            "channel": [r["channel"] for r in recent],
            "status": [f"{_STATUS_ICON.get(r['status'], '')} {r['status']}" for r in recent],
            "attempts": [r["attempts"] for r in recent],
            "last error": [r["last_error"] or "" for r in recent],
            "next attempt": [fmt.when(r["next_attempt_at"]) if r["next_attempt_at"] else "" for r in recent],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")
