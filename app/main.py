"""Streamlit entry point: starts the process's Server once and navigates over the pages in pages/."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts only app/ on sys.path; the backend package lives at the repo root.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app import auth  # noqa: E402
from app.context import get_server  # noqa: E402

st.set_page_config(page_title="Costlake", page_icon="💠", layout="wide")

get_server()  # the runtime, the mart, the scheduler and the first demo load, once per process
# Before any page: a shared deployment shows the sign-in (or refusal) screen and stops here.
auth.sidebar(auth.current_principal())


def _page(name: str, title: str, icon: str, **kwargs) -> st.Page:
    return st.Page(f"../pages/{name}.py", title=title, icon=icon, url_path=name, **kwargs)


PAGES = {
    "Cost": [
        # The default page is served at "/" only; the hidden twin answers a bookmarked or typed /overview
        # (which otherwise pops "Page not found"). Each page needs its own url_path.
        st.Page("../pages/overview.py", title="Overview", icon="📊", url_path="home", default=True),
        _page("overview", "Overview", "📊", visibility="hidden"),
        _page("explorer", "Cost explorer", "🔎"),
        _page("anomalies", "Anomalies", "🚨"),
        _page("budgets", "Budgets", "🎯"),
        _page("waste", "Waste & savings", "♻️"),
        _page("showback", "Showback", "🧾"),
        _page("chat", "Ask Costlake", "💬"),
    ],
    "Data": [
        _page("gold", "Gold tables", "🥇"),
        _page("pipeline", "Pipeline", "⚙️"),
        _page("sources", "Sources & settings", "🩺"),
    ],
}

st.navigation(PAGES).run()
