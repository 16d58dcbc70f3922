"""Shared page plumbing: cached reads keyed by the mart's data version, prerequisites, empty and error states."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from app import data
from app.context import get_launcher, get_pipeline, get_reader
from backend.mart.queries import Kpis

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reads are cached per data version (last successful load + run): a new load changes the key, so the
# TTL only bounds memory and covers writes made outside the pipeline (e.g. another replica's feedback).
READ_TTL = dt.timedelta(minutes=30)


def guard(what: str, fn: Callable[..., T], *args: Any, fix: str = "", **kwargs: Any) -> T | None:
    """Call fn; on failure log with context and show a friendly error (never a stack trace)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        log.exception("page failed while %s", what)
        st.error(
            f"Could not {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}" + (f"\n\n{fix}" if fix else ""),
            icon="⚠️",
        )
        return None


@st.cache_data(ttl=dt.timedelta(seconds=10), show_spinner=False)
def data_status() -> data.DataStatus:
    return data.data_status(get_reader())


def status_or_stop() -> data.DataStatus:
    """The mart's status; stops the page with a friendly message when the mart cannot be reached."""
    status = guard("reach the cost mart", data_status, fix="Check **Sources & settings** for the Postgres status.")
    if status is None:
        st.stop()
    return status


def require_data(status: data.DataStatus) -> None:
    """Empty state for pages that need cost data: what to do next, and (in demo mode) a one-click demo load."""
    if not status.empty:
        return
    settings = get_pipeline().settings
    launcher = get_launcher()
    st.info("No cost data in the mart yet.", icon="🪣")
    if launcher.busy:
        st.write("A pipeline run is loading data right now; follow it on the **Pipeline** page.")
    elif settings.is_demo:
        st.write(
            "Costlake is in **demo mode** (no Azure credentials configured): the first pipeline run loads a "
            "synthetic estate. Start it here, or upload FOCUS / Azure export files on **Sources & settings**."
        )
        if st.button("Load the demo estate now", type="primary"):
            launcher.start()
            st.success("Started. Follow it on the **Pipeline** page; this page fills in when the run finishes.")
    else:
        st.write("Run the pipeline on the **Pipeline** page, or upload cost files on **Sources & settings**.")
    st.stop()


def currency_choice(status: data.DataStatus, *, key: str = "currency") -> str:
    """The reporting currency; a selector appears only when the mart holds more than one."""
    if len(status.currencies) <= 1:
        return status.currencies[0] if status.currencies else ""
    return st.selectbox("Currency", status.currencies, key=key, help="Costs are never summed across currencies.")


def data_as_of(status: data.DataStatus) -> None:
    from app import fmt

    st.caption(
        f"Data as of **{fmt.when(status.as_of)}** · last load {fmt.ago(status.last_loaded_at)}"
        f" · last successful run {status.last_run_id or '–'}"
    )


# --- cached reads (the first argument is the data version: part of the cache key) -------------------


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def kpis(version: str, as_of: dt.date, currency: str, metric: str) -> Kpis:
    return data.kpis(get_reader(), as_of=as_of, currency=currency, metric=metric)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def month_end_forecast(version: str, as_of: dt.date, currency: str, metric: str) -> data.MonthEndForecast | None:
    return data.month_end_forecast(get_reader(), as_of=as_of, currency=currency, metric=metric)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def top_movers(version: str, as_of: dt.date, currency: str, dimension: str, metric: str) -> pd.DataFrame:
    return data.top_movers(get_reader(), as_of=as_of, currency=currency, dimension=dimension, metric=metric)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def daily_total(version: str, start: dt.date, end: dt.date, metric: str, currency: str) -> pd.DataFrame:
    return data.daily_total(get_reader(), start=start, end=end, metric=metric, currency=currency)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def cost_by(
    version: str,
    group_by: str,
    start: dt.date,
    end: dt.date,
    grain: str,
    metric: str,
    filters: tuple[tuple[str, tuple[str, ...]], ...],
) -> pd.DataFrame:
    return data.cost_by(
        get_reader(), group_by=group_by, start=start, end=end, grain=grain, metric=metric, filters=dict(filters)
    )


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def dimension_values(version: str, name: str) -> list[str]:
    return data.dimension_values(get_reader(), name)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def tag_keys(version: str) -> list[str]:
    return data.tag_keys(get_reader())


def clear_reads() -> None:
    """After a write from a page (budget, feedback): drop cached reads so the change shows at once."""
    st.cache_data.clear()
