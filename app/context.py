"""Process-wide clients for the UI, built once per server process through st.cache_resource."""

from __future__ import annotations

import atexit
import logging

import streamlit as st

from backend.auth import system_principal
from backend.auth.oidc import check_startup
from backend.config import Settings, get_settings
from backend.logs import setup_logging
from backend.runtime import Runtime

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Starting Costlake services…")
def get_runtime() -> Runtime:
    """Start (or join) every embedded service once per server process; Spark warms up in the background."""
    from app import process

    if process.runtime is not None:  # launched by `python -m app.serve`: already started
        return process.runtime
    settings = get_settings()
    setup_logging(settings)
    # `streamlit run app/main.py` directly: the same refusal as app.serve (production needs sign-in).
    check_startup(settings)
    runtime = Runtime(settings)
    runtime.start(spark=True)
    log.info("costlake runtime started: %s", {k: round(v, 2) for k, v in runtime.startup_seconds.items()})
    return runtime


@st.cache_resource(show_spinner="Preparing the cost mart…")
def get_pipeline():
    """The pipeline service (owner-role engine, lake); runs migrations on first use."""
    from app import process
    from backend.pipeline.service import PipelineService

    if process.pipeline is not None:
        return process.pipeline

    return PipelineService(get_runtime())


@st.cache_resource(show_spinner=False)
def get_scheduler():
    """One BackgroundScheduler per server process, jobs persisted in Postgres; None when disabled."""
    from app import process

    if process.runtime is not None:  # the launcher owns the scheduler (None when disabled)
        return process.scheduler
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


# --- added for the pages (issue 9): read-only engine, owner engine, lake, run launcher -------------------


@st.cache_resource(show_spinner=False)
def get_reader():
    """Engine on the mart's read-only role (pages read through it); the owner engine when the role is unusable."""
    from backend.mart.db import ensure_reader_role, ping, reader_engine

    pipeline = get_pipeline()
    owner_url = pipeline.endpoints.database_url
    try:
        ensure_reader_role(pipeline.settings, owner_url=owner_url)
        engine = reader_engine(pipeline.settings, owner_url=owner_url)
        ping(engine)
        return engine
    except Exception:
        # Pages must still work (e.g. an external server that requires a reader password not yet set):
        # logged loudly, and the page-level writes already use the owner anyway.
        log.exception("read-only role unusable; pages fall back to the owner engine")
        return pipeline.engine


def get_owner():
    """The owner-role engine (budgets, anomaly feedback, run logs)."""
    return get_pipeline().engine


def get_lake():
    return get_pipeline().lake


@st.cache_resource(show_spinner=False)
def get_launcher():
    """Starts manual pipeline runs in a background thread of this process and remembers the outcome."""
    from app.pipeline_ui import RunLauncher

    return RunLauncher(lambda: get_pipeline())


@st.cache_resource(show_spinner=False)
def autostart_demo() -> bool:
    """First start with no configuration: load the demo estate at once instead of waiting for the hourly job.

    Only with the scheduler enabled (a served app, not a headless test) and only when no run was ever
    recorded, so a restart never re-triggers it. Under `python -m app.serve` the launcher already queued it."""
    from app import process

    if process.runtime is not None:
        return False
    runtime = get_runtime()
    if not (runtime.settings.is_demo and runtime.settings.scheduler_enabled):
        return False
    from backend.mart.history import latest_run

    try:
        ran = latest_run(get_pipeline().engine) is not None
    except Exception:
        log.exception("could not check for earlier runs; demo autostart skipped")
        return False
    if ran:
        return False
    log.info("first start in demo mode: loading the demo estate")
    get_launcher().start(actor=system_principal("first-start"))
    return True
