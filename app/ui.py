"""Shared page plumbing: cached reads keyed by the mart's data version, prerequisites, empty and error states."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from app import auth, budget_forms, data, run_history
from app.context import get_launcher, get_owner, get_pipeline, get_reader
from backend.auth import PermissionDenied, Role
from backend.mart import analytics, freshness
from backend.mart.freshness import SourceFreshness
from backend.mart.queries import Kpis

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reads are cached per data version (last successful load + run): a new load changes the key, so the
# TTL only bounds memory and covers writes made outside the pipeline (e.g. another replica's feedback).
READ_TTL = dt.timedelta(minutes=30)


def guard(what: str, fn: Callable[..., T], *args: Any, fix: str = "", **kwargs: Any) -> T | None:
    """Call fn, saying what the page waits for while it runs; on failure log with context and show a friendly
    error (never a stack trace)."""
    try:
        with st.spinner(f"Waiting to {what}…"):
            return fn(*args, **kwargs)
    except PermissionDenied as exc:
        # Not a fault: the user's role does not allow it; say which role would (and audit the attempt).
        auth.refused(exc)
        return None
    except Exception as exc:
        log.exception("page failed while %s", what)
        st.error(
            f"Could not {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}" + (f"\n\n{fix}" if fix else ""),
            icon="⚠️",
        )
        return None


# At most this many reads in flight per page run: the queries are small, the machine may have 2 cores.
PREFETCH_WORKERS = 4


def prefetch(*calls: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
    """Run independent cached reads at once, so their queries overlap instead of queueing (each mostly waits
    on Postgres with the GIL released); the page then calls the same functions and gets cache hits.

    Only for st.cache_data functions that draw nothing. A failure is not cached, so the page's own call
    repeats it under `guard`, which shows the friendly error."""
    # A rerun with the same view (a widget elsewhere changed, a fragment) has these in cache already: spawning
    # threads only to find that out cost more than the lookups, so each session prefetches a call once.
    seen = st.session_state.setdefault("_ui_prefetched", set())
    if len(seen) > 256:
        seen.clear()
    calls = tuple((fn, args) for fn, args in calls if (fn.__qualname__, args) not in seen)
    if not calls:
        return
    seen.update((fn.__qualname__, args) for fn, args in calls)
    ctx = get_script_run_ctx()

    def run(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        add_script_run_ctx(threading.current_thread(), ctx)  # cache_data needs the session's context
        try:
            fn(*args)
        except Exception:
            log.debug("prefetch of %s failed; the page's own call reports it", fn.__name__, exc_info=True)

    # Fresh threads per page run: a pooled thread would keep a finished run's context attached.
    with ThreadPoolExecutor(max_workers=min(PREFETCH_WORKERS, len(calls)), thread_name_prefix="costlake-read") as pool:
        for fn, args in calls:
            pool.submit(run, fn, args)


@st.cache_data(ttl=dt.timedelta(seconds=10), show_spinner=False)
def data_status() -> data.DataStatus:
    return data.data_status(get_reader())


DEMO_BANNER = (
    "Demo data: these numbers are a generated demo estate, not your bill. Upload FOCUS or Azure export "
    "files (or set Azure credentials) and the demo is removed before your data loads."
)


def status_or_stop() -> data.DataStatus:
    """The mart's status; stops the page with a friendly message when the mart cannot be reached."""
    status = guard("reach the cost mart", data_status, fix="Check **Sources & settings** for the Postgres status.")
    if status is None:
        st.stop()
    if status.demo and not status.empty:
        st.warning(DEMO_BANNER, icon="🧪")
    return status


def require_data(status: data.DataStatus) -> None:
    """Empty state for pages that need cost data: what to do next, and (in demo mode) a one-click demo load."""
    if not status.empty:
        return
    settings = get_pipeline().settings
    launcher = get_launcher()
    latest = guard("read the latest run", run_history.latest_run, get_reader())
    if launcher.busy or (latest is not None and latest["status"] == "running"):
        first_load_progress()
        st.stop()
    st.info("No cost data in the mart yet.", icon="🪣")
    if settings.is_demo:
        st.write(
            "Costlake is in **demo mode** (no Azure credentials configured): the first pipeline run loads a "
            "synthetic estate. Start it here, or upload FOCUS / Azure export files on **Sources & settings**."
        )
        principal = auth.current_principal()
        if st.button("Load the demo estate now", type="primary", disabled=not principal.can(Role.admin)) and (
            guard("start the demo load", launcher.start, actor=principal) is not None
        ):
            st.success("Started. Follow it on the **Pipeline** page; this page fills in when the run finishes.")
        auth.role_note(principal, Role.admin, "Loading the demo estate")
    else:
        st.write("Run the pipeline on the **Pipeline** page, or upload cost files on **Sources & settings**.")
    st.stop()


@st.fragment(run_every=dt.timedelta(seconds=2))
def first_load_progress() -> None:
    """While the first load runs: which step, how far, with its row counts; the page fills when it ends."""
    latest = guard("read the latest run", run_history.latest_run, get_reader())
    if latest is None or latest["status"] != "running":
        if get_launcher().busy:  # requested here, not recorded yet
            st.progress(0.0, text="Starting the first load…")
            return
        st.rerun()  # the run ended: the whole page reads the mart again
    steps = guard("read the run's steps", run_history.run_steps, get_reader(), latest["run_id"])
    if steps is None or steps.empty:
        st.progress(0.0, text="Starting the first load…")
        return
    done = int(steps["status"].isin(["succeeded", "failed", "skipped"]).sum())
    current = steps[steps["status"] == "running"]
    step = current.iloc[0] if not current.empty else None
    text = f"First load: step {min(done + 1, len(steps))} of {len(steps)}"
    if step is not None:
        text += f" — {step['step']}"
        if not pd.isna(step["rows_in"]):
            text += f" ({int(step['rows_in']):,} rows in)"
    st.progress(done / len(steps), text=text)
    finished = steps[steps["status"] == "succeeded"]
    if not finished.empty:
        st.caption(
            " · ".join(
                f"{r['step']}: {int(r['rows_out']):,} rows" if not pd.isna(r["rows_out"]) else f"{r['step']}: done"
                for _, r in finished.iterrows()
            )
        )
    st.caption("The pages fill in when the load reaches the mart; details on the **Pipeline** page.")


def currency_choice(status: data.DataStatus, *, key: str = "currency", converted: bool = False) -> str:
    """The currency shown; a selector appears only when the mart holds more than one. `converted`: the pages
    that can also offer every currency converted to the reporting currency (once FX rates are imported)."""
    if len(status.currencies) <= 1:
        return status.currencies[0] if status.currencies else ""
    options = list(status.currencies)
    if converted and status.reporting_currency:
        options.append(data.converted_choice(status.reporting_currency))
    return st.selectbox(
        "Currency",
        options,
        key=key,
        help="Costs are never summed across billing currencies; the converted choice converts each day with "
        "the imported FX rates (a month without a rate is not available, never left out).",
    )


# Freshness follows the clock, not the data version: a source turns stale while nothing is loaded.
FRESHNESS_TTL = dt.timedelta(minutes=1)


def source_freshness() -> list[SourceFreshness]:
    settings = get_pipeline().settings
    # The expectations are part of the cache key: a changed setting (or another runtime's) is never answered
    # from a value computed with the old one.
    return _source_freshness(settings.database_url, settings.stale_after_hours, settings.stale_after_hours_file)


@st.cache_data(ttl=FRESHNESS_TTL, show_spinner=False)
def _source_freshness(
    database_url: str, stale_after_hours: float, stale_after_hours_file: float
) -> list[SourceFreshness]:
    return freshness.source_freshness(get_reader(), get_pipeline().settings)


def data_as_of(status: data.DataStatus | None = None) -> None:
    """Every page's "data as of" line; a warning instead, naming each stale source and what to do about it."""
    from app import fmt

    try:
        status = status or data_status()
        stale = [f for f in source_freshness() if f.stale]
    except Exception as exc:  # the page itself still works; its own reads report the mart's state
        log.exception("could not read data freshness")
        st.caption(f"Data freshness unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return
    line = (
        f"Data as of **{fmt.when(status.as_of)}** · last load {fmt.ago(status.last_loaded_at)}"
        f" · last successful run {status.last_run_id or '–'}"
    )
    if stale:
        problems = "\n".join(f"- {f.detail}. {freshness.what_to_do(f)}" for f in stale)
        st.warning(f"**Stale data.** {line}\n\n{problems}", icon="⏳")
    elif not status.empty:
        st.caption(line)


# --- cached reads (the first argument is the data version: part of the cache key) -------------------


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def kpis(version: str, as_of: dt.date, currency: str, metric: str) -> Kpis:
    return data.kpis(get_reader(), as_of=as_of, currency=currency, metric=metric)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def month_end_forecast(version: str, as_of: dt.date, currency: str, metric: str) -> analytics.MonthEndForecast | None:
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
def open_anomalies(version: str) -> pd.DataFrame:
    return data.anomalies(get_reader(), status="open")


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def budget_burns(version: str, as_of: dt.date, limit: int = 6) -> list[tuple[dict[str, Any], float]]:
    """The enabled budgets (at most `limit`) with what their current period has spent up to `as_of`.
    Budget writes on the Budgets page clear the cache, so a new budget shows at once."""
    budgets = budget_forms.list_budgets(get_owner())
    out = []
    for _, b in budgets[budgets["enabled"]].head(limit).iterrows():
        burn = budget_forms.budget_burn(get_reader(), b.to_dict(), as_of=as_of)
        out.append((b.to_dict(), float(burn["cumulative"].iloc[-1]) if not burn.empty else 0.0))
    return out


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def dimension_values(version: str, name: str) -> list[str]:
    return data.dimension_values(get_reader(), name)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def tag_keys(version: str) -> list[str]:
    return data.tag_keys(get_reader())


def clear_reads() -> None:
    """After a write from a page (budget, feedback): drop cached reads so the change shows at once."""
    st.cache_data.clear()
    st.session_state.pop("_ui_prefetched", None)  # so the next run prefetches again
