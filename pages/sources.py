"""Sources & settings: health of every service, Azure credential check, file upload (validated), demo mode,
and the effective settings (no secrets)."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from app import fmt, ui, uploads
from app.context import get_launcher, get_owner, get_runtime

log = logging.getLogger(__name__)
st.title("Sources & settings")
runtime = get_runtime()
settings = runtime.settings

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
    if settings.is_demo:
        st.markdown(
            "🧪 **Demo mode**: runs load a synthetic estate (subscriptions, services, tags, injected anomalies)."
        )
    if st.button("Check Azure credentials", key="src_azure_check"):
        result = ui.guard("check the Azure credentials", uploads.azure_credential_check, settings)
        if result is not None:
            ok, message = result
            (st.success if ok else st.warning)(message)
    else:
        st.caption("configured" if settings.azure_configured else "not configured (demo estate is used)")
with c2, st.container(border=True):
    st.markdown("**Inbox folder**")
    st.caption(f"`{settings.inbox_dir}` · files here are imported every 5 minutes (job `inbox-scan`).")
    files = uploads.inbox_files(settings.inbox_dir)
    st.caption(f"{len(files)} file(s) waiting or imported")

# --- upload ------------------------------------------------------------------------------------------
st.subheader("Upload cost files")
st.caption("FOCUS CSV (1.0–1.2) or an Azure cost export CSV (actual or amortized). Each file is checked in full "
           "first: a file with problems is rejected and nothing is loaded.")  # fmt: skip
with st.form("src_upload", clear_on_submit=True):
    uploaded = st.file_uploader("Files", type=["csv"], accept_multiple_files=True, key="src_files")
    import_now = st.checkbox("Import now (run the pipeline for the inbox)", value=True, key="src_import_now")
    submitted = st.form_submit_button("Validate and upload", type="primary")
if submitted:
    if not uploaded:
        st.warning("Choose at least one file first.")
    saved = 0
    for f in uploaded or []:
        payload = f.getvalue()
        check = uploads.validate(f.name, payload, max_bytes=settings.max_upload_mb * 2**20)
        if not check.ok:
            log.warning("upload %s rejected: %s", f.name, check.errors)
            st.error(
                f"**{f.name}** was rejected, nothing was loaded:\n\n" + "\n".join(f"- {e}" for e in check.errors),
                icon="🚫",
            )
            continue
        path = ui.guard(f"save {f.name}", uploads.save_to_inbox, settings.inbox_dir, check, payload)
        if path is not None:
            saved += 1
            st.success(f"**{f.name}**: {check.kind.replace('_', ' ')} file, {check.rows:,} rows, "
                       f"{check.first_day} to {check.last_day}. Saved to the inbox.")  # fmt: skip
    if saved and import_now:
        get_launcher().start(options={"sources": ["inbox"]})
        st.info("Import started: follow it on the **Pipeline** page.")

# --- source coverage ---------------------------------------------------------------------------------
with st.expander("What each source has delivered"):
    from app import data

    cursors = ui.guard("read the source cursors", data.source_cursors, get_owner())
    if cursors is not None and cursors.empty:
        st.caption("Nothing delivered yet.")
    elif cursors is not None:
        st.dataframe(cursors, hide_index=True, width="stretch")

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
