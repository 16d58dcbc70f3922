"""Overview: month-to-date, end-of-month forecast, vs last month, budget burn, top movers, open anomalies."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app import charts, data, fmt, ui

st.title("Overview")
status = ui.status_or_stop()
ui.require_data(status)

left, right = st.columns([3, 1])
with right:
    currency = ui.currency_choice(status, key="overview_currency", converted=True)
    metric = st.segmented_control("Cost", ["actual", "amortized"], default="actual", key="overview_metric") or "actual"
with left:
    ui.data_as_of(status)

as_of = status.as_of
movers_dim = st.session_state.get("overview_movers_dim", "service")
# Every read below at once (they are independent); the calls that follow are cache hits.
ui.prefetch(
    (ui.kpis, (status.version, as_of, currency, metric)),
    (ui.month_end_forecast, (status.version, as_of, currency, metric)),
    (ui.daily_total, (status.version, as_of - dt.timedelta(days=59), as_of, metric, currency)),
    (ui.top_movers, (status.version, as_of, currency, movers_dim, metric)),
    (ui.budget_burns, (status.version, as_of)),
    (ui.open_anomalies, (status.version,)),
)
k = ui.guard("compute the KPIs", ui.kpis, status.version, as_of, currency, metric)
if k is None:
    st.stop()
fc = ui.guard("read the month-end forecast", ui.month_end_forecast, status.version, as_of, currency, metric)
unit = data.converted_to(currency) or currency  # the converted choice shows the reporting currency
prev_start, prev_same = data.previous_month_same_day(as_of)

c1, c2, c3, c4 = st.columns(4)
c1.metric(f"Month to date ({as_of:%b %Y})", fmt.cost(k.month_to_date, unit, metric), border=True)
if not k.available and unit != currency:
    c1.caption("Some billing currency lacks an FX rate for part of this period: import a rates file for it.")
elif not k.available:
    c1.caption(fmt.not_available_hint(metric))
elif unit != currency:
    c1.caption(f"Every billing currency converted to {unit} with the imported FX rates.")
c2.metric(
    "vs last month, same day",
    fmt.cost(k.last_month_same_point, unit, metric),
    delta=fmt.pct(k.change_vs_last_month * 100) if k.change_vs_last_month is not None else None,
    delta_color="inverse",
    border=True,
    help=f"{fmt.when(prev_start)} to {fmt.when(prev_same)}",
)
if fc is None and data.converted_to(currency):
    c3.metric("End-of-month forecast", "–", border=True)
    c3.caption("Forecasts are per billing currency: choose one above to see its month-end forecast.")
elif fc is None:
    c3.metric("End-of-month forecast", "–", border=True)
    c3.caption("No month-end forecast yet: the pipeline's **analytics** step computes it after a load.")
else:
    level = f"{fc.interval_level:.0%} " if fc.interval_level else ""
    c3.metric(
        "End-of-month forecast",
        fmt.money(fc.point, currency),
        border=True,
        help=f"{fmt.money(fc.actual_to_date, currency)} so far plus the forecast of the remaining days to "
        f"{fmt.when(fc.period_end)}. Method: {fc.method}; generated {fmt.when(fc.generated_at)}.",
    )
    c3.caption(
        f"{level}interval {fmt.money(fc.lower, currency)} – {fmt.money(fc.upper, currency)}"
        + (f" · data to {fmt.when(fc.as_of)}" if fc.as_of != as_of else "")
        + (" · all currencies summed" if fc.currency is None and len(status.currencies) > 1 else "")
    )
c4.metric("Last month total", fmt.cost(k.last_month_total, unit, metric), border=True)

daily = ui.guard(
    "load the daily trend", ui.daily_total, status.version, as_of - dt.timedelta(days=59), as_of, metric, currency
)
if daily is not None and not daily.empty:
    st.plotly_chart(charts.daily_bars(daily, currency=unit), key="overview_daily")

col_b, col_m = st.columns(2)
with col_b:
    st.subheader("Budget burn")
    burns = ui.guard("compute budget burn", ui.budget_burns, status.version, as_of)
    if burns is not None and not burns:
        st.caption("No enabled budgets yet. Create one on the **Budgets** page to track burn here.")
    for b, spent in burns or []:
        share = spent / float(b["amount"]) if b["amount"] else 0.0
        st.progress(min(max(share, 0.0), 1.0), text=f"{b['name']}: {fmt.money(spent, b['currency'])} of "
                    f"{fmt.money(float(b['amount']), b['currency'])} ({share:.0%}, {b['period']})")  # fmt: skip
with col_m:
    st.subheader("Top movers (7 days vs the 7 before)")
    dim = st.selectbox("by", ["service", "subscription", "resource_group", "region"], key="overview_movers_dim",
                       format_func=data.title, label_visibility="collapsed")  # fmt: skip
    movers = ui.guard("load top movers", ui.top_movers, status.version, as_of, currency, dim, metric)
    if movers is not None and movers.empty:
        st.caption("Not enough history yet for movers (needs 14 days).")
    elif movers is not None:
        st.dataframe(
            movers,
            hide_index=True,
            width="stretch",
            column_config={
                "group": data.title(dim),
                "current_cost": st.column_config.NumberColumn("last 7 days", format="%.2f"),
                "previous_cost": st.column_config.NumberColumn("7 days before", format="%.2f"),
                "change": st.column_config.NumberColumn("change", format="%+.2f"),
                "change_pct": st.column_config.NumberColumn("change %", format="%+.1f%%"),
            },
        )

st.subheader("Open anomalies")
open_anomalies = ui.guard("load anomalies", ui.open_anomalies, status.version)
if open_anomalies is not None and open_anomalies.empty:
    st.caption("No open anomalies. Detection runs in the pipeline's analytics step.")
elif open_anomalies is not None:
    st.metric("open", len(open_anomalies), label_visibility="collapsed")
    st.dataframe(
        open_anomalies[
            ["charge_date", "level", "dimension_value", "kind", "severity", "actual", "expected", "impact"]
        ].head(10),
        hide_index=True,
        width="stretch",
    )
    st.caption("Review and mark them on the **Anomalies** page.")
