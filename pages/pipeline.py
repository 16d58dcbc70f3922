"""Pipeline: run now (all or some steps) with live progress, schedules, run history with steps and logs,
Kafka lag, table freshness and reconciliation."""

from __future__ import annotations

import datetime as dt
import logging

import streamlit as st

from app import auth, data, fmt, ops, run_history, ui
from app.context import get_lake, get_launcher, get_owner, get_pipeline, get_reader, get_schedules

log = logging.getLogger(__name__)
TIME_HELP = "UTC, like every time in the app."
st.title("Pipeline")
ui.data_as_of()
launcher = get_launcher()
principal = auth.current_principal()
is_admin = principal.can(auth.Role.admin)


def _active() -> bool:
    """A run is going: started here, or by the scheduler / CLI (only one runs at a time)."""
    try:
        latest = run_history.latest_run(get_reader())
    except Exception:
        log.exception("could not read the latest run")
        latest = None
    return launcher.busy or bool(latest and latest["status"] == "running")


# --- run now -----------------------------------------------------------------------------------------
steps_all = get_pipeline().steps
active = _active()
with st.container(border=True):
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    chosen = c1.multiselect("Steps", steps_all, default=steps_all, key="pl_steps",
                            help="All steps in order, or only some (e.g. re-run analytics after a fix).")  # fmt: skip
    clicked = c2.button("▶ Run now", type="primary", disabled=active or not chosen or not is_admin, key="pl_run",
                        help="Disabled while a run is going (scheduled runs too).")  # fmt: skip
    auth.role_note(principal, auth.Role.admin, "Running the pipeline")
if clicked:
    ordered = [s for s in steps_all if s in chosen]
    if ui.guard("start the run", launcher.start, actor=principal, steps=None if ordered == steps_all else ordered):
        st.session_state["pl_watch"] = True
elif active:
    st.session_state["pl_watch"] = True


@st.fragment(run_every=dt.timedelta(seconds=2) if (launcher.busy or st.session_state.get("pl_watch")) else None)
def live_progress() -> None:
    """Progress of the current (or last) run from ops.pipeline_steps: manual and scheduled runs alike."""
    launch = launcher.current
    latest = ui.guard("read the latest run", run_history.latest_run, get_reader())
    if launch is not None and launch.status == "error":
        st.error(
            f"The run requested at {launch.started_at:%H:%M:%S} UTC could not start: {launch.error}\n\nThe app log (`DATA_DIR/logs/costlake.log`) has the details.",
            icon="⚠️",
        )
    if launch is not None and launch.status == "skipped":
        st.info(f"The run requested at {launch.started_at:%H:%M:%S} UTC was skipped: another run was going.", icon="⏭️")
    if latest is None:
        if launch is None or launch.status != "error":
            st.info("No pipeline run yet. Press **Run now** to ingest, process and load cost data.", icon="⚙️")
        st.session_state["pl_watch"] = launcher.busy
        return
    steps = ui.guard("read the run's steps", run_history.run_steps, get_reader(), latest["run_id"])
    running = latest["status"] == "running"
    label = f"Run {latest['run_id']} · {latest['trigger']} · {latest['status']}"
    state = "running" if running else ("error" if latest["status"] in ("failed", "abandoned") else "complete")
    with st.status(label, state=state, expanded=running or latest["status"] == "failed"):
        if steps is not None and not steps.empty:
            done = int(steps["status"].isin(["succeeded", "failed", "skipped"]).sum())
            st.progress(done / len(steps), text=f"{done}/{len(steps)} steps")
            for _, s in steps.iterrows():
                extra = "" if fmt.missing(s["seconds"]) else f" · {fmt.seconds(s['seconds'])}s"
                rows = (
                    ""
                    if fmt.missing(s["rows_out"])
                    else f" · rows in {fmt.count(s['rows_in'])}, out {fmt.count(s['rows_out'])}"
                )
                st.write(f"{run_history.STATUS_ICONS.get(s['status'], '•')} **{s['step']}** {s['status']}{extra}{rows}")
                if not fmt.missing(s["error"]) and s["error"]:
                    # Warning as in the run history below: a failed step is shown, the page itself is fine.
                    st.warning(s["error"], icon="❌")
        if latest["error"]:
            st.caption(latest["error"])
    was_watching = st.session_state.get("pl_watch")
    st.session_state["pl_watch"] = running or launcher.busy
    if was_watching and not st.session_state["pl_watch"]:
        ui.clear_reads()
        st.rerun()  # the run ended: refresh history, freshness and the rest of the page


live_progress()


def show_ingest(ingest: ops.IngestDetails) -> None:
    """Batches the run sent and what became of them, dead letters and inbox files."""
    st.markdown("**Ingest**")
    i1, i2, i3, i4 = st.columns(4)
    i1.metric("Batches sent", len(ingest.batches))
    i2.metric("Committed", int((ingest.batches["state"] == "committed").sum()) if not ingest.batches.empty else 0)
    i3.metric(
        "Not in bronze", ingest.not_in_bronze, help="Their cursors did not move: the next run fetches them again."
    )
    i4.metric("Dead letters", "–" if ingest.dead_letters is None else ingest.dead_letters,
              help="Messages bronze could not read; kept in the dead-letter table.")  # fmt: skip
    if not ingest.batches.empty:
        st.dataframe(ingest.batches, hide_index=True, width="stretch")
    if not ingest.inbox.empty:
        st.markdown("Inbox files")
        st.dataframe(ingest.inbox, hide_index=True, width="stretch")


tab_hist, tab_sched, tab_kafka, tab_fresh, tab_recon = st.tabs(
    ["Run history", "Schedules", "Kafka lag", "Table freshness", "Reconciliation"]
)

with tab_hist:
    runs = ui.guard("load run history", run_history.runs, get_reader())
    if runs is not None and runs.empty:
        st.caption("No runs recorded yet.")
    elif runs is not None:
        # Same row order as `runs`, so a selected row's position picks the run there.
        event = st.dataframe(
            run_history.runs_table(runs),
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key="pl_runs",
            column_config={
                "started": st.column_config.TextColumn("started", help=TIME_HELP),
                "finished": st.column_config.TextColumn("finished", help=TIME_HELP),
            },
        )
        picked = event.selection.rows if event is not None else []
        # A notification links here with ?run=<id>: that run is shown until the user picks another row.
        linked = st.query_params.get("run")
        linked_rows = runs.index[runs["run_id"] == linked].tolist() if linked else []
        if linked and not linked_rows:
            st.caption(f"Run {linked} from the link is not among the runs listed here.")
        default = runs.index.get_loc(linked_rows[0]) if linked_rows else 0
        run_id = runs.iloc[picked[0] if picked else default]["run_id"]
        st.markdown(f"**Steps of {run_id}**")
        steps = ui.guard("load the steps", run_history.run_steps, get_reader(), run_id)
        if steps is not None:
            st.dataframe(
                run_history.steps_table(steps),
                hide_index=True,
                width="stretch",
                column_config={
                    "started": st.column_config.TextColumn("started", help=TIME_HELP),
                    "summary": st.column_config.TextColumn(
                        "summary", width="large", help="What the step did, from its details (all of them below)."
                    ),
                },
            )
            # A failed step is an expected state to inspect here, not a page fault: warning, not st.error
            # (the browser test treats any error alert as a broken page).
            for step, error in run_history.failed_steps(steps):
                st.warning(f"Step **{step}** failed:", icon="❌")
                st.code(error or "(no error text recorded)", language=None, wrap_lines=True)
            with st.expander("Raw step details"):
                shown = False
                for record in steps.to_dict("records"):
                    detail = run_history.parse_detail(record["detail"])
                    if detail in (None, {}, []):
                        continue
                    st.markdown(f"**{record['step']}**")
                    st.json(detail, expanded=1)
                    shown = True
                if not shown:
                    st.caption("The steps of this run recorded no details.")
            ingest = ops.ingest_details(steps)
            if ingest is not None:
                show_ingest(ingest)
        with st.expander("Logs"):
            logs = ui.guard("load the logs", run_history.run_logs, get_owner(), run_id)
            if logs is not None and logs.empty:
                st.caption("No log lines stored for this run.")
            elif logs is not None:
                level = st.segmented_control("Level", ["all", "WARNING", "ERROR"], default="all", key="pl_log_level")
                if level and level != "all":
                    logs = logs[
                        logs["level"].isin(
                            ["WARNING", "ERROR", "CRITICAL"] if level == "WARNING" else ["ERROR", "CRITICAL"]
                        )
                    ]
                st.dataframe(logs, hide_index=True, width="stretch")

with tab_sched:
    schedules = get_schedules()
    if schedules is None:
        st.info(
            "The scheduler is off in this process (`SCHEDULER_ENABLED=false`); runs start only from here or the CLI."
        )
    else:

        def _toggle(job) -> bool:
            (schedules.resume if job.paused else schedules.pause)(job.job_id, actor=principal)
            return True

        jobs = ui.guard("list the scheduled jobs", schedules.list) or []
        auth.role_note(principal, auth.Role.admin, "Changing a schedule")
        for job in jobs:
            with st.container(border=True):
                j1, j2, j3 = st.columns([3, 2, 1])
                j1.markdown(f"**{job.name}**  \n`{job.job_id}` · {job.trigger}")
                j2.write("⏸️ paused" if job.paused else f"next run {fmt.when(job.next_run_time)}")
                toggled = j3.button("Resume" if job.paused else "Pause", key=f"pl_toggle_{job.job_id}",
                                    disabled=not is_admin)  # fmt: skip
                if toggled and ui.guard("change the job", _toggle, job):
                    st.rerun()
                with st.expander("Edit schedule"), st.form(f"pl_form_{job.job_id}"):
                    kind = st.radio("Kind", ["interval", "cron"], horizontal=True, key=f"pl_kind_{job.job_id}")
                    k1, k2 = st.columns(2)
                    every = k1.number_input("Every (interval)", 1, 10_000, 60, key=f"pl_every_{job.job_id}")
                    unit = k2.selectbox("Unit", ["minutes", "hours", "days"], key=f"pl_unit_{job.job_id}")
                    cron = st.text_input("Cron (minute hour day month day_of_week), UTC", "30 3 * * *",
                                         key=f"pl_cron_{job.job_id}")  # fmt: skip
                    if st.form_submit_button("Save schedule", disabled=not is_admin):
                        try:
                            if kind == "interval":
                                args = {unit: int(every)}
                            else:
                                parts = cron.split()
                                if len(parts) != 5:
                                    raise ValueError(
                                        "a cron expression has 5 fields: minute hour day month day_of_week"
                                    )
                                args = dict(zip(["minute", "hour", "day", "month", "day_of_week"], parts, strict=True))
                            info = schedules.reschedule(job.job_id, kind=kind, args=args, actor=principal)
                            st.success(f"Saved: {info.trigger}, next run {fmt.when(info.next_run_time)}")
                        except auth.PermissionDenied as exc:
                            auth.refused(exc, target=job.job_id)
                        except ValueError as exc:
                            st.error(f"That schedule is not valid: {exc}", icon="✋")

with tab_kafka:
    lag = ui.guard("read Kafka lag", ops.kafka_lag, get_pipeline(),
                   fix="Kafka may still be starting, or no data was ever sent; see **Sources & settings**.")  # fmt: skip
    drained = ui.guard("read the drain history", ops.drains, get_lake())
    k1, k2, k3 = st.columns(3)
    if lag is not None:
        k1.metric("Messages not yet in bronze", f"{int(lag['lag'].sum()):,}" if not lag.empty else "0")
    if drained is not None and not drained.empty:
        last = drained.iloc[0]
        k2.metric("Last drain", f"{int(last['cost_rows']):,} rows", help=f"finished {fmt.when(last['finished_at'])}")
        k3.metric("Throughput", f"{last['cost_rows_per_s']:,.0f} rows/s", delta=f"{int(last['dead_letters'])} dead letters",
                  delta_color="inverse" if last["dead_letters"] else "off")  # fmt: skip
    if lag is not None and lag.empty:
        st.caption("No partitions yet: the topic is created by the first ingest.")
    elif lag is not None:
        st.markdown("**Partitions** (committed = the consumer group's offset; bronze through = what bronze holds)")
        st.dataframe(lag, hide_index=True, width="stretch")
    if drained is not None and not drained.empty:
        st.markdown("**Drains into bronze**")
        st.dataframe(drained, hide_index=True, width="stretch")
    batches = ui.guard("read the ingest batches", run_history.batch_states, get_owner())
    if batches is not None and not batches.empty:
        st.markdown("**Ingest batches** (a batch's cursors move only once bronze holds all of it)")
        st.dataframe(batches, hide_index=True, width="stretch")

with tab_fresh:
    fresh = ui.guard("read the mart freshness", data.mart_freshness, get_reader())
    if fresh is not None:
        st.markdown("**Cost mart**")
        st.dataframe(fresh, hide_index=True, width="stretch")
    loads = ui.guard("read the load history", run_history.load_history, get_reader())
    if loads is not None and not loads.empty:
        st.markdown("**Mart loads**")
        st.dataframe(loads, hide_index=True, width="stretch")
    lake_tables = ui.guard("read the lake tables", ops.lake_freshness, get_lake())
    if lake_tables is not None:
        st.markdown("**Lake tables**")
        if lake_tables.empty:
            st.caption("No Delta tables yet.")
        else:
            st.dataframe(lake_tables, hide_index=True, width="stretch")

with tab_recon:
    st.caption(
        "Per day, source family (FOCUS, Azure detail, Azure query) and currency: the mart's actual cost against "
        "silver's, counted as gold counts it, and against the total the source reported."
    )
    if st.button("Reconcile now", key="pl_reconcile", disabled=active or not is_admin,
                 help="Reads silver through delta-rs; takes a few seconds on a large lake."):  # fmt: skip
        with st.spinner("Comparing mart, silver and source totals…"):
            report = ui.guard("reconcile", run_history.reconcile_now, get_owner(), get_lake(), actor=principal,
                              fix="Silver must exist: run the pipeline first.")  # fmt: skip
        if report is not None:
            st.toast(f"Reconciliation {report.check_id}: {len(report.mismatches)} of {len(report.rows)} rows differ.")
    result = ui.guard("read the reconciliation", run_history.reconciliation, get_reader())
    if result is not None:
        check, rows = result
        if check is None:
            st.caption("No reconciliation yet: press **Reconcile now** after a load.")
        else:
            r1, r2, r3 = st.columns(3)
            r1.metric("Checked", fmt.when(check["checked_at"]))
            r2.metric("Days checked", check["days_checked"])
            r3.metric("Mismatches", check["mismatches"], delta="ok" if not check["mismatches"] else "investigate",
                      delta_color="normal" if not check["mismatches"] else "inverse")  # fmt: skip
            if rows.empty:
                st.success("Every day, source and currency matches within the tolerance.", icon="✅")
            else:
                st.dataframe(rows, hide_index=True, width="stretch")
