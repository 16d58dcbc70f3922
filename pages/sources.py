"""Sources & settings: health of every service, Azure credential check, file upload (validated), demo mode,
and the effective settings (no secrets)."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from app import auth, fmt, notify_ui, run_history, ui, uploads
from app import data as app_data
from app.context import get_launcher, get_owner, get_runtime
from backend.auth.oidc import DISABLED, LAPTOP
from backend.mart.audit import recent
from backend.pipeline.sources import default_sources
from backend.sources.azure.source import CONFIGURED, MISCONFIGURED, NOT_CONFIGURED, azure_config

log = logging.getLogger(__name__)
st.title("Sources & settings")
ui.data_as_of()
runtime = get_runtime()
settings = runtime.settings
principal = auth.current_principal()
Role = auth.Role

# --- services ----------------------------------------------------------------------------------------
st.subheader("Services")
statuses = ui.guard("check the services", runtime.status) or []
if statuses:
    cols = st.columns(len(statuses))
    for col, status in zip(cols, statuses, strict=True):
        with col:
            icon = "✅" if status.healthy else ("⏳" if status.detail.startswith("starting") else "❌")
            st.metric(status.name.capitalize(), f"{icon} {'healthy' if status.healthy else 'not ready'}")
            st.caption(f"{status.mode} · {status.location}")
            st.caption(status.detail)
    if not all(s.healthy for s in statuses):
        st.info("Spark takes about 10 seconds to start after the app; refresh to update.", icon="ℹ️")
        if st.button("Refresh", key="src_refresh"):
            st.rerun()

# --- sources -----------------------------------------------------------------------------------------
st.subheader("Cost sources")
c1, c2 = st.columns(2)
with c1, st.container(border=True):
    st.markdown("**Azure Cost Management**")
    azure = azure_config(settings)
    pulled = default_sources(settings)
    # Not configured is a valid deployment (demo, or files only); only a half-done setup is an error.
    if azure.state == MISCONFIGURED:
        st.error(f"Azure source {azure.message}. Runs fail at ingest until this is fixed.", icon="⚠️")
    elif azure.state == CONFIGURED:
        st.markdown(f"✅ Azure source {azure.message}.")
    else:
        st.markdown(f"Azure source {azure.message} to read a tenant.")
    if "demo" in pulled:
        st.markdown(
            "🧪 **Demo mode**: runs load a synthetic estate (subscriptions, services, tags, injected anomalies)."
        )
        if azure.state == NOT_CONFIGURED:
            st.caption(
                "Without Azure credentials, the `azure` source reads a demo tenant: a local fake of Azure's token "
                "endpoint and Cost Management APIs serving the same estate, through the production connector. "
                "A lake takes the demo estate through one path only (`demo` or the demo tenant's `azure`)."
            )
    elif pulled == ["inbox"]:
        st.caption("Runs import the files in the inbox only; nothing is fetched from Azure.")
    st.caption(f"Scheduled runs pull: {', '.join(f'`{name}`' for name in pulled)}.")
    if st.button("Check Azure credentials", key="src_azure_check", disabled=not principal.can(Role.admin)):
        result = ui.guard("check the Azure credentials", uploads.azure_credential_check, settings, actor=principal)
        if result is not None:
            ok, message = result
            (st.success if ok else st.warning)(message)
with c2, st.container(border=True):
    st.markdown("**Inbox folder**")
    st.caption(f"`{settings.inbox_dir}` · files here are imported by every pipeline run and the `inbox-scan` job.")
    if settings.inbox_uri:
        st.caption(
            f"Also watched: `{settings.inbox_uri}` (S3). Each run copies its ready files and export runs here "
            "first; on the bucket they then move to `processed/` or `rejected/`."
        )
    inbox = uploads.inbox_files(settings.inbox_dir)
    st.caption(
        f"{len(inbox['waiting'])} waiting · {len(inbox['processed'])} imported · {len(inbox['rejected'])} refused"
        " (see `rejected/*.error.txt`)"
    )

# --- upload ------------------------------------------------------------------------------------------
st.subheader("Upload cost files")
st.caption("FOCUS 1.0–1.3 (CSV or Parquet) or an Azure EA / MCA cost export (CSV, optionally gzip), actual or "
           "amortized. Each file is checked in full first: a refused file is not loaded at all.")  # fmt: skip
auth.role_note(principal, Role.editor, "Uploading files")
with st.form("src_upload", clear_on_submit=True):
    uploaded = st.file_uploader("Files", type=uploads.ACCEPTED_TYPES, accept_multiple_files=True, key="src_files",
                                disabled=not principal.can(Role.editor))  # fmt: skip
    submitted = st.form_submit_button("Validate and upload", type="primary", disabled=not principal.can(Role.editor))
if submitted:
    if not uploaded:
        st.warning("Choose at least one file first.")
    for f in uploaded or []:
        try:
            saved = uploads.save_upload(f.name, f.getvalue(), settings, actor=principal, owner=get_owner())
        except auth.PermissionDenied as exc:
            auth.refused(exc, target=f.name)
            break
        except uploads.FileRefusedError as exc:
            log.warning("upload %s refused: %s", f.name, exc)
            st.error(f"**{f.name}** was refused, nothing was loaded:\n\n{exc}", icon="🚫")
            continue
        except OSError as exc:
            log.exception("upload %s could not be saved to %s", f.name, settings.inbox_dir)
            st.error(f"**{f.name}** passed the checks but could not be saved to the inbox: {exc.strerror or exc}.",
                     icon="⚠️")  # fmt: skip
            continue
        span = f", {saved.first_day} to {saved.last_day}" if saved.first_day else ""
        where = "was already waiting in the inbox" if saved.already_there else "saved to the inbox"
        st.success(f"**{f.name}**: {saved.format}, {saved.metric}, {saved.rows:,} rows{span}, "
                   f"total {saved.total}; {where}.")  # fmt: skip
        for note in saved.notes:
            st.caption(f"{f.name}: {note}")
        st.session_state["src_waiting"] = True

if st.session_state.get("src_waiting"):
    launcher = get_launcher()
    with st.container(border=True):
        st.markdown("Files are waiting in the inbox. Import them now, or let the next scheduled run pick them up.")
        if st.button("Import now", type="primary", key="src_import", disabled=launcher.busy) and (
            launch := ui.guard("import the inbox", launcher.start, actor=principal, options={"sources": ["inbox"]})
        ):
            st.session_state["src_waiting"] = False
            st.session_state["src_import_started"] = launch.started_at
            st.rerun()
        if launcher.busy:
            st.caption("A run started from this app is going; the inbox can be imported when it ends.")
if started := st.session_state.get("src_import_started"):
    st.info(f"Import requested at {fmt.when(started)}: follow it on the **Pipeline** page.", icon="📥")

# --- the demo estate ---------------------------------------------------------------------------------
if ui.guard("check for demo data", app_data.demo_shown, get_owner()):
    launcher = get_launcher()
    with st.container(border=True):
        st.markdown(
            "**Demo data is loaded.** It is removed by itself before the first real file or Azure pull "
            "loads, so real totals never include it. Remove it now to start from an empty mart."
        )
        auth.role_note(principal, Role.admin, "Removing the demo data")
        if st.button(
            "Remove demo data", key="src_remove_demo", disabled=launcher.busy or not principal.can(Role.admin)
        ) and (launch := ui.guard("remove the demo data", launcher.start, actor=principal, steps=["remove_demo"])):
            st.session_state["src_demo_removal"] = launch.started_at
            st.rerun()
if started := st.session_state.get("src_demo_removal"):
    st.info(f"Demo data removal requested at {fmt.when(started)}: follow it on the **Pipeline** page.", icon="🧹")

# --- source coverage ---------------------------------------------------------------------------------
with st.expander("What each source has delivered"):
    cursors = ui.guard("read the source cursors", run_history.source_cursors, get_owner())
    if cursors is not None and cursors.empty:
        st.caption("Nothing delivered yet.")
    elif cursors is not None:
        st.dataframe(cursors, hide_index=True, width="stretch")

# --- sign-in ----------------------------------------------------------------------------------------
st.subheader("Sign-in and roles")
mode = auth.mode()
if mode.mode == LAPTOP:
    st.markdown(
        "💻 **Laptop mode**: no sign-in is configured, so this is a single-user app and you have every right. "
        "A shared deployment sets `AUTH_PROVIDER_METADATA_URL` and the other `AUTH_*` settings (see the README)."
    )
elif mode.mode == DISABLED:
    st.markdown("⚠️ **Sign-in is disabled** (`AUTH_DISABLED=true`): anyone who reaches this port has every right.")
else:
    st.markdown(
        f"🔐 Users sign in through OIDC ({mode.source}). You are **{principal.email}**, role "
        f"**{principal.role.name}**. Viewers read and ask the agent; editors also change budgets, anomaly "
        "feedback and uploads; admins also run the pipeline, edit schedules and see the settings and audit."
    )
if principal.can(Role.admin):
    with st.expander("Audit: who changed what"):
        entries = ui.guard("read the audit", recent, get_owner(), limit=500)
        if entries is not None and not entries:
            st.caption("No writes recorded yet.")
        elif entries is not None:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "at": fmt.when(e.at),
                            "who": e.who,
                            "role": e.role,
                            "action": e.action,
                            "target": e.target,
                            "outcome": e.outcome,
                            "detail": str(e.detail),
                        }
                        for e in entries
                    ]  # fmt: skip
                ),
                hide_index=True,
                width="stretch",
            )

notify_ui.render()  # Notifications: channels, send test, deliveries (issue 23)

if not principal.can(Role.admin):
    auth.role_note(principal, Role.admin, "Seeing the effective settings")
    st.stop()

# --- settings ----------------------------------------------------------------------------------------
st.subheader("Effective settings")
st.caption("Secrets are masked. Change them in `.env`, `.streamlit/secrets.toml` or the environment, then restart.")
view = settings.public_view()
st.dataframe(
    pd.DataFrame({"setting": [k.upper() for k in view], "value": [str(v) for v in view.values()]}),
    hide_index=True,
    width="stretch",
)
st.caption(f"Started services in {fmt.money(sum(runtime.startup_seconds.values()), '', decimals=1)} s.")
