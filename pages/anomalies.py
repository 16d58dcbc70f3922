"""Anomalies: each series with its expected band and markers; the list with severity and contributors; feedback."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app import auth, charts, data, fmt, ui
from app.context import get_owner, get_reader

st.title("Anomalies")
principal = auth.current_principal()
status = ui.status_or_stop()
ui.require_data(status)
ui.data_as_of(status)

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
