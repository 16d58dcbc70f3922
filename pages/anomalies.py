"""Anomalies: each series with its expected band and markers; the list (by status and cloud) with severity and
contributors; feedback; and the detection settings per level (sensitivity, window, minimum impact)."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app import auth, charts, data, fmt, ui
from app.context import get_owner, get_reader, settings
from backend.analytics import anomaly_settings

st.title("Anomalies")
principal = auth.current_principal()
status = ui.status_or_stop()
ui.require_data(status)
ui.data_as_of(status)
SETTING_LABELS = {
    "sensitivity": "Sensitivity (robust z)",
    "history_days": "Window (days of history)",
    "min_cost_impact": "Minimum impact per day",
    "min_relative_impact": "Minimum relative impact",
}


def settings_panel() -> None:
    """Per level: the values in effect (the environment's unless the level has its own), and a form to change them.
    Saved values are used by the next analytics run, which rescores the history once."""
    saved = ui.guard("load the anomaly settings", anomaly_settings.stored, get_owner())
    if saved is None:
        return
    rows = anomaly_settings.effective(settings(), saved)
    table = [
        {"level": r["level"], **{label: r[k] for k, label in SETTING_LABELS.items()},
         "own settings": ", ".join(k for k in SETTING_LABELS if r[f"{k}_set"]) or "defaults",
         "changed by": r["updated_by"] or ""}
        for r in rows
    ]  # fmt: skip
    st.dataframe(table, hide_index=True, width="stretch", key="as_table")
    st.caption(
        "Defaults come from ANOMALY_SENSITIVITY, ANOMALY_HISTORY_DAYS, ANOMALY_MIN_COST_IMPACT and "
        "ANOMALY_MIN_RELATIVE_IMPACT. A level's own values take effect on the next analytics run (it rescores the "
        "history once). Lower sensitivity = more anomalies."
    )
    by_level = {r["level"]: r for r in rows}
    level = st.selectbox("Level", list(by_level), key="as_level")
    row = by_level[level]
    defaults = anomaly_settings.params_by_level(settings(), {}, [level])[level]
    can_edit = principal.can(auth.Role.editor)
    auth.role_note(principal, auth.Role.editor, "Changing anomaly settings")
    with st.form(f"as_form_{level}"):
        c = st.columns(4)
        values = {
            "sensitivity": c[0].number_input(SETTING_LABELS["sensitivity"], 0.5, 20.0, float(row["sensitivity"]), 0.5,
                                             key=f"as_sensitivity_{level}"),
            "history_days": c[1].number_input(SETTING_LABELS["history_days"], 14, 365, int(row["history_days"]), 7,
                                              key=f"as_history_days_{level}"),
            "min_cost_impact": c[2].number_input(SETTING_LABELS["min_cost_impact"], 0.0, 1e9,
                                                 float(row["min_cost_impact"]), 5.0, key=f"as_min_cost_impact_{level}"),
            "min_relative_impact": c[3].number_input(SETTING_LABELS["min_relative_impact"], 0.0, 100.0,
                                                     float(row["min_relative_impact"]), 0.05,
                                                     key=f"as_min_relative_impact_{level}"),
        }  # fmt: skip
        b1, b2 = st.columns(2)
        save = b1.form_submit_button("Save settings", type="primary", disabled=not can_edit)
        reset = b2.form_submit_button("Back to defaults", disabled=not can_edit)
    if save:
        # Only what differs from the environment is the level's own: a later change of the default still applies.
        own = {k: v for k, v in values.items() if v != getattr(defaults, k)}
        done = ui.guard("save the anomaly settings", anomaly_settings.save, get_owner(), level, actor=principal, **own)
        if done is not None:
            st.success(f"Settings of {level} saved: the next analytics run uses them.")
    elif reset and ui.guard("reset the anomaly settings", anomaly_settings.reset, get_owner(), level,
                            actor=principal) is not None:  # fmt: skip
        st.success(f"Settings of {level} are the defaults again (from the next analytics run).")


with st.expander("Detection settings per level"):
    settings_panel()

c1, c2 = st.columns([1, 3])
# A notification links here with ?anomaly=<id>: list every status so the linked one is there to open.
linked = st.query_params.get("anomaly")
show = c1.selectbox("Show", ["open", "expected", "resolved", "all"], index=3 if linked else 0, key="an_status")
frame = ui.guard("load anomalies", data.anomalies, get_reader(), status=None if show == "all" else show)
if frame is None:
    st.stop()
if frame.empty:
    st.info(
        f"No {'' if show == 'all' else show + ' '}anomalies. Detection runs in the pipeline's **analytics** step; "
        "run it from the **Pipeline** page after new data arrives.",
        icon="✅",
    )
    st.stop()

# Which clouds each anomaly's member had cost in that day (FOCUS ProviderName); [] when no provider is named.
clouds = sorted({p for names in frame["providers"] for p in names})
if clouds:
    wanted = c2.multiselect("Providers (cloud)", clouds, key="an_providers", placeholder="every provider")
    if wanted:
        frame = frame[frame["providers"].map(lambda names: bool(set(names) & set(wanted)))].reset_index(drop=True)
        if frame.empty:
            st.info(f"No {'' if show == 'all' else show + ' '}anomalies on {', '.join(wanted)}.", icon="✅")
            st.stop()
frame["provider"] = frame["providers"].map(", ".join)
frame["series"] = frame["level"] + " · " + frame["dimension_value"]
st.caption(f"{len(frame)} anomalies; select a row to see its series and contributors.")
event = st.dataframe(
    frame[
        [
            "anomaly_id",
            "charge_date",
            "series",
            "metric",
            "kind",
            "severity",
            "actual",
            "expected",
            "impact",
            "currency",
            "provider",
            "status",
        ]
    ],  # fmt: skip
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="an_table",
    column_config={
        "severity": st.column_config.ProgressColumn(
            "severity", min_value=0.0, max_value=max(10.0, float(frame["severity"].max() or 0)), format="%.1f"
        ),
        "actual": st.column_config.NumberColumn(format="%.2f"),
        "expected": st.column_config.NumberColumn(format="%.2f"),
        "impact": st.column_config.NumberColumn(format="%+.2f"),
    },
)
rows = event.selection.rows if event is not None else []
linked_rows = [i for i, a in enumerate(frame["anomaly_id"]) if linked and str(a) == linked]
if linked and not linked_rows:
    st.caption(f"Anomaly {linked} from the link is not in this list (it may have been re-scored away).")
pick = frame.iloc[rows[0] if rows else (linked_rows[0] if linked_rows else 0)]

st.subheader(f"{pick['series']} on {fmt.when(pick['charge_date'])}")
a, b, c = st.columns(3)
a.metric("Actual", fmt.money(pick["actual"], pick["currency"] or ""))
b.metric("Expected", fmt.money(pick["expected"], pick["currency"] or ""),
         help=f"band {fmt.money(pick['lower_bound'])} – {fmt.money(pick['upper_bound'])}; method {pick['method'] or '–'}")  # fmt: skip
c.metric("Impact", fmt.money(pick["impact"], pick["currency"] or ""), delta=pick["kind"], delta_color="off")

start = pick["charge_date"] - dt.timedelta(days=60)
end = min(status.as_of, pick["charge_date"] + dt.timedelta(days=14))
# The series and band in the anomaly's own currency: a member billed in two currencies is two series, never a sum.
series = ui.guard("load the series", data.series_for, get_reader(), level=pick["level"], value=pick["dimension_value"],
                  metric=pick["metric"], start=start, end=end, currency=pick["currency"])  # fmt: skip
band = ui.guard("load the expected band", data.anomaly_band, get_reader(), level=pick["level"],
                value=pick["dimension_value"], metric=pick["metric"], currency=pick["currency"])  # fmt: skip
if series is not None:
    if band is not None and not band.empty:
        band = band[(band["day"] >= str(start)) & (band["day"] <= str(end))]
    st.plotly_chart(charts.daily_with_band(series, band, currency=pick["currency"] or ""), key="an_chart")

st.markdown("**Root-cause contributors**")
contrib = data.contributors_frame(pick["contributors"])
if contrib.empty:
    st.caption("No contributor breakdown was stored for this anomaly.")
else:
    st.dataframe(contrib, hide_index=True, width="stretch")

with st.form("an_feedback", border=True):
    st.markdown("**Your verdict**")
    verdict = st.radio("Verdict", ["expected", "resolved", "reopened"], horizontal=True,
                       captions=["a known change: suppress repeats", "fixed", "back to open"])  # fmt: skip
    note = st.text_input("Note", placeholder="e.g. planned load test, new project")
    suppress = st.number_input("Suppress the same pattern for (days)", 0, 365, 30 if verdict == "expected" else 0)
    auth.role_note(principal, auth.Role.editor, "Giving feedback on an anomaly")
    if st.form_submit_button("Save verdict", type="primary", disabled=not principal.can(auth.Role.editor)):
        done = ui.guard("save the verdict", data.set_anomaly_status, get_owner(), int(pick["anomaly_id"]), actor=principal,
                        verdict=verdict, note=note, suppress_days=int(suppress) if verdict == "expected" else 0)  # fmt: skip
        if done is not None:
            ui.clear_reads()
            st.toast(f"Anomaly {int(pick['anomaly_id'])} marked {verdict}.")
