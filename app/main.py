"""Streamlit entry point: starts the runtime once and navigates over the pages in pages/."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts only app/ on sys.path; the backend package lives at the repo root.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app.context import get_runtime, get_scheduler  # noqa: E402

st.set_page_config(page_title="Costlake", page_icon="💠", layout="wide")

get_runtime()
get_scheduler()

PAGES = {
    "Settings": [
        st.Page("../pages/health.py", title="Services & settings", icon="🩺", url_path="health", default=True),
    ],
}

st.navigation(PAGES).run()
