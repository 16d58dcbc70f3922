"""Process-wide clients for the UI, built once per server process through st.cache_resource."""

from __future__ import annotations

import logging

import streamlit as st

from backend.config import Settings, get_settings
from backend.logs import setup_logging
from backend.runtime import Runtime

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Starting Costlake services…")
def get_runtime() -> Runtime:
    """Start (or join) every embedded service once per server process; Spark warms up in the background."""
    settings = get_settings()
    setup_logging(settings)
    runtime = Runtime(settings)
    runtime.start(spark=True)
    log.info("costlake runtime started: %s", {k: v for k, v in runtime.startup_seconds.items()})
    return runtime


def settings() -> Settings:
    return get_runtime().settings
