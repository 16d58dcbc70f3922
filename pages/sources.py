"""Services & settings: where each service runs, whether it is healthy, and the effective settings (no secrets)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.context import get_runtime

st.title("Services & settings")
runtime = get_runtime()

statuses = runtime.status()
cols = st.columns(len(statuses))
for col, status in zip(cols, statuses, strict=True):
    with col:
        icon = "✅" if status.healthy else ("⏳" if status.detail.startswith("starting") else "❌")
        st.metric(status.name.capitalize(), f"{icon} {'healthy' if status.healthy else 'not ready'}")
        st.caption(f"{status.mode} · {status.location}")
        st.caption(status.detail)

if not all(s.healthy for s in statuses):
    st.info("Spark takes about 10 seconds to start after the app; refresh to update.", icon="ℹ️")
    if st.button("Refresh"):
        st.rerun()

st.subheader("Effective settings")
st.caption("Secrets are masked. Change them in `.env`, `.streamlit/secrets.toml` or the environment, then restart.")
view = runtime.settings.public_view()
st.dataframe(
    pd.DataFrame({"setting": [k.upper() for k in view], "value": [str(v) for v in view.values()]}),
    hide_index=True,
    width="stretch",
)
