"""Process-wide clients for the UI, built once per server process through st.cache_resource."""

from __future__ import annotations

import atexit
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
    log.info("costlake runtime started: %s", {k: round(v, 2) for k, v in runtime.startup_seconds.items()})
    return runtime


@st.cache_resource(show_spinner="Preparing the cost mart…")
def get_pipeline():
    """The pipeline service (owner-role engine, lake); runs migrations on first use."""
    from backend.pipeline.service import PipelineService

    return PipelineService(get_runtime())


@st.cache_resource(show_spinner=False)
def get_scheduler():
    """One BackgroundScheduler per server process, jobs persisted in Postgres; None when disabled."""
    if not get_runtime().settings.scheduler_enabled:
        return None
    from scheduler.service import start_scheduler

    pipeline = get_pipeline()
    scheduler = start_scheduler(pipeline.endpoints.database_url, pipeline.run)
    # Streamlit stops with SIGTERM/SIGINT and then runs atexit: let a running job finish its step cleanly.
    atexit.register(lambda: scheduler.shutdown(wait=False) if scheduler.running else None)
    return scheduler


def settings() -> Settings:
    return get_runtime().settings
