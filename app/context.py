"""What the pages get from the process's Server (app/process.py), through one st.cache_resource."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa
import streamlit as st

from app import process
from backend.auth.oidc import check_startup
from backend.config import Settings, get_settings
from backend.lake import Lake
from backend.logs import setup_logging
from backend.pipeline.launcher import RunLauncher
from backend.pipeline.service import PipelineService
from backend.runtime import Runtime
from scheduler.service import Schedules

if TYPE_CHECKING:  # LangChain loads with the first question (app/process.Server.agent), not with every page
    from backend.agent.agent import CostAgent

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Starting Costlake services…")
def get_server() -> process.Server:
    """The process's Server: the one `python -m app.serve` started, or started now by `streamlit run`."""
    settings = get_settings()
    if not process.started():  # `streamlit run app/main.py` directly: nothing started yet
        setup_logging(settings)
        check_startup(settings)  # the same refusal as app.serve: production needs sign-in
    return process.start(settings)


def get_agent() -> CostAgent:
    """The process's cost agent (model and tools over its engines), built on the first question."""
    return get_server().agent()


def get_runtime() -> Runtime:
    return get_server().resources.runtime


def settings() -> Settings:
    return get_server().resources.settings


def get_pipeline() -> PipelineService:
    return get_server().pipeline


def get_reader() -> sa.Engine:
    """The read-only role's engine (statement timeout from settings): what the pages read through."""
    return get_server().resources.reader


def get_owner() -> sa.Engine:
    """The owner-role engine (budgets, anomaly feedback, the audit)."""
    return get_server().resources.owner


def get_lake() -> Lake:
    return get_server().resources.lake


def get_launcher() -> RunLauncher:
    """Starts manual pipeline runs in a background thread of this process and remembers the outcome."""
    return get_server().launcher


def get_schedules() -> Schedules | None:
    """The scheduled jobs (None when SCHEDULER_ENABLED=false)."""
    return get_server().schedules
