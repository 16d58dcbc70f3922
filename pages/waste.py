"""Waste & savings: list vs contracted vs effective cost, commitment utilisation, and resources that look wasted."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import fmt, ui
from app.context import get_reader
from backend.mart import waste

NOT_AVAILABLE = "not available"
CONTRACTED_HINT = (
    "Not available: the loaded sources do not carry ContractedCost (Azure cost exports do not; FOCUS files do). "
    "Import a FOCUS export of the same scope and days to see negotiated and commitment savings."
)
LIST_HINT = "Not available: the loaded sources carry no list (pay-as-you-go) cost and amortized cost for this month."
STATUS_HINT = (
    "Not available: no loaded row carries CommitmentDiscountStatus for this month (no reservation or savings plan "
    "in a FOCUS file; Azure exports do not carry the column)."
)


# --- cached reads (the first argument is the data version: a new load changes the key) ----------------
@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def months(version: str) -> list[dt.date]:
    return waste.waste_months(get_reader())


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def savings(version: str, start: dt.date, end: dt.date, currency: str) -> waste.Savings:
    return waste.savings_summary(get_reader(), start=start, end=end, currency=currency)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def trend(version: str, start: dt.date, end: dt.date, currency: str) -> pd.DataFrame:
    rows = waste.savings_by_month(get_reader(), start=start, end=end, currency=currency)
    return _frame(rows, waste.SavingsMonth)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def commitments(version: str, start: dt.date, end: dt.date, currency: str) -> pd.DataFrame:
    rows = waste.commitments(get_reader(), start=start, end=end, currency=currency)
    return _frame(rows, waste.Commitment)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def orphans(version: str, month: dt.date, currency: str) -> pd.DataFrame:
    return _frame(waste.orphans(get_reader(), month=month, currency=currency), waste.Orphan)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def zero_usage(version: str, month: dt.date, currency: str) -> pd.DataFrame:
    return _frame(waste.zero_usage(get_reader(), month=month, currency=currency), waste.ZeroUsage)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def changes(version: str, month: dt.date, currency: str) -> pd.DataFrame:
    return _frame(waste.cost_changes(get_reader(), month=month, currency=currency), waste.CostChange)


def _frame(rows: list, cls: type) -> pd.DataFrame:
    """Typed rows as a DataFrame with the dataclass's columns (also when empty); Decimals as floats for display."""
    columns = [f.name for f in dataclasses.fields(cls)]
    frame = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=columns)
    for name in columns:
        if frame[name].map(lambda v: v.__class__.__name__ == "Decimal").any():
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def _month_end(month: dt.date) -> dt.date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def _money(value, currency: str) -> str:
    return NOT_AVAILABLE if value is None else fmt.money(float(value), currency)


def _share(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else fmt.pct(value * 100, signed=False)


def _trend_figure(frame: pd.DataFrame, currency: str) -> go.Figure:
    """Monthly list, contracted and effective cost as bars; commitment utilisation as a line on its own axis."""
    fig = go.Figure()
    for column, name, color in (("list_cost", "list", "#A0A0A0"), ("contracted_cost", "contracted", "#8764B8"),
                                ("effective_cost", "effective", "#0F6CBD")):  # fmt: skip
        fig.add_bar(x=frame["month"], y=frame[column], name=name, marker_color=color)
    if frame["commitment_utilisation"].notna().any():
        fig.add_scatter(x=frame["month"], y=frame["commitment_utilisation"] * 100, name="commitment utilisation %",
                        yaxis="y2", mode="lines+markers", line={"color": "#E3008C"})  # fmt: skip
    fig.update_layout(
        barmode="group",
        yaxis={"title": {"text": f"cost ({currency})" if currency else "cost"}},
        yaxis2={"title": {"text": "utilisation %"}, "overlaying": "y", "side": "right", "range": [0, 105]},
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.15},
        height=360,
    )
    return fig


st.title("Waste & savings")
status = ui.status_or_stop()
ui.require_data(status)

left, right = st.columns([3, 1])
with right:
    currency = ui.currency_choice(status, key="waste_currency")
available = ui.guard("list the months", months, status.version) or []
if not available:
    st.info("No months in the mart yet: run the pipeline's **mart** step.", icon="🪣")
    st.stop()
# The last whole month by default: the open month's first days carry the commitments' monthly payments and
# little usage, so its savings and waste are not yet representative.
latest_open = status.as_of is not None and status.as_of < _month_end(available[0])
with right:
    month = st.selectbox("Month", available, index=1 if latest_open and len(available) > 1 else 0,
                         format_func=lambda m: m.strftime("%b %Y"), key="waste_month")  # fmt: skip
with left:
    ui.data_as_of(status)

month_end = _month_end(month)
trend_start = (month.replace(day=1) - dt.timedelta(days=335)).replace(day=1)  # twelve months up to this one
ui.prefetch(
    (savings, (status.version, month, month_end, currency)),
    (trend, (status.version, trend_start, month_end, currency)),
    (commitments, (status.version, month, month_end, currency)),
    (orphans, (status.version, month, currency)),
    (zero_usage, (status.version, month, currency)),
    (changes, (status.version, month, currency)),
)

savings_tab, waste_tab = st.tabs(["Savings", "Waste"])

with savings_tab:
    s = ui.guard("compute the savings", savings, status.version, month, month_end, currency)
    if s is not None:
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Effective savings rate", _share(s.effective_savings_rate), border=True,
                  help="(list − effective) / list: everything list prices would have cost more, discounts and "
                       "commitments together, net of unused commitment.")  # fmt: skip
        c2.metric("Negotiated savings", _money(s.negotiated_savings, currency), border=True,
                  help="list − contracted cost: the price sheet's discount.")  # fmt: skip
        c3.metric("Commitment savings", _money(s.commitment_savings, currency), border=True,
                  help="contracted − effective cost: what reservations and savings plans saved, net of unused.")  # fmt: skip
        c4.metric("Commitment utilisation", _share(s.commitment_utilisation), border=True,
                  help="used / (used + unused) effective cost of commitment-covered rows (CommitmentDiscountStatus).")  # fmt: skip
        if s.effective_savings_rate is None:
            c1.caption(LIST_HINT)
        if s.negotiated_savings is None:
            c2.caption(CONTRACTED_HINT)
        if s.commitment_utilisation is None:
            c4.caption(STATUS_HINT)
        covered = []
        if s.list_covered is not None and s.list_covered < 0.9995:
            covered.append(f"the savings rate covers {_share(s.list_covered)} of the month's effective cost")
        if s.contracted_covered is not None and s.contracted_covered < 0.9995:
            covered.append(
                f"negotiated and commitment savings {_share(s.contracted_covered)} (rows with ContractedCost)"
            )
        if covered:
            st.caption("Partial: " + "; ".join(covered) + ". The rest comes from sources without those columns.")
        st.caption(
            f"{month:%B %Y}: list {_money(s.list_cost, currency)} · contracted {_money(s.contracted_cost, currency)}"
            f" · effective {_money(s.effective_cost, currency)} · unused commitment "
            f"{_money(s.commitment_unused, currency)}"
        )

    history = ui.guard("load the savings trend", trend, status.version, trend_start, month_end, currency)
    if history is not None and not history.empty:
        st.subheader("List vs contracted vs effective cost")
        st.plotly_chart(_trend_figure(history, currency), key="waste_trend")
    used = ui.guard("load commitment utilisation", commitments, status.version, month, month_end, currency)
    st.subheader("Commitments")
    if used is None or used.empty:
        st.caption("No reservation or savings plan cost with a commitment status this month.")
    else:
        st.dataframe(
            used.assign(utilisation=used["utilisation"] * 100),
            hide_index=True,
            width="stretch",
            column_config={
                "used": st.column_config.NumberColumn(format="%.2f"),
                "unused": st.column_config.NumberColumn(format="%.2f"),
                "utilisation": st.column_config.ProgressColumn(
                    "utilisation %", min_value=0, max_value=100, format="%.1f"
                ),
            },
        )

with waste_tab:
    orphaned = ui.guard("find orphan-looking resources", orphans, status.version, month, currency)
    idle = ui.guard("find cost without usage", zero_usage, status.version, month, currency)
    moved = ui.guard("read started and stopped resources", changes, status.version, month, currency)
    if orphaned is None or idle is None or moved is None:
        st.stop()
    c1, c2, c3 = st.columns(3)
    c1.metric("Orphan-looking resources", fmt.money(float(orphaned["monthly_cost"].sum()), currency), border=True,
              delta=f"{len(orphaned)} resources", delta_color="off")  # fmt: skip
    c2.metric("Cost without usage", fmt.money(float(idle["monthly_cost"].sum()), currency), border=True,
              delta=f"{len(idle)} resource meters", delta_color="off")  # fmt: skip
    c3.metric("Cost started / stopped", f"{(moved['event'] == 'started').sum()} / {(moved['event'] == 'stopped').sum()}",
              border=True, help="Resources whose daily cost started after a gap or stopped before one this month.")  # fmt: skip
    link = st.column_config.LinkColumn("portal", display_text="open")
    money_col = st.column_config.NumberColumn(format="%.2f")

    st.subheader("Orphan-looking resources")
    st.caption(" · ".join(f"**{r.label}**: {r.why}" for r in waste.ORPHAN_RULES))
    if orphaned.empty:
        st.caption("None this month.")
    else:
        st.dataframe(orphaned[["label", "resource_name", "resource_group", "meters", "days", "monthly_cost", "link",
                               "resource_id"]], hide_index=True, width="stretch",
                     column_config={"link": link, "monthly_cost": money_col, "days": st.column_config.NumberColumn(
                         help="stopped VMs: days billed without compute hours")})  # fmt: skip

    st.subheader("Cost without usage")
    st.caption("Usage charges of a resource and meter with cost but zero quantity over the whole month.")
    if idle.empty:
        st.caption("None this month.")
    else:
        st.dataframe(idle[["resource_name", "resource_group", "meter_category", "meter_name", "monthly_cost", "link",
                           "resource_id"]], hide_index=True, width="stretch",
                     column_config={"link": link, "monthly_cost": money_col})  # fmt: skip

    st.subheader("Resources whose cost started or stopped")
    if moved.empty:
        st.caption("None this month.")
    else:
        st.dataframe(moved[["event", "event_date", "resource_name", "resource_group", "service_name", "daily_cost",
                            "monthly_cost", "link", "resource_id"]], hide_index=True, width="stretch",
                     column_config={"link": link, "daily_cost": money_col, "monthly_cost": money_col})  # fmt: skip

    frames = [
        orphaned.assign(finding=orphaned["label"])[
            ["finding", "resource_id", "resource_group", "monthly_cost", "link"]
        ],
        idle.assign(finding="cost without usage: " + idle["meter_name"])[
            ["finding", "resource_id", "resource_group", "monthly_cost", "link"]
        ],
        moved.assign(finding="cost " + moved["event"] + " " + moved["event_date"].astype(str))[
            ["finding", "resource_id", "resource_group", "monthly_cost", "link"]
        ],
    ]
    combined = pd.concat([f for f in frames if not f.empty] or [frames[0]], ignore_index=True)
    st.download_button(
        "Download waste findings (CSV)",
        combined.assign(month=month.isoformat(), currency=currency).to_csv(index=False).encode(),
        file_name=f"costlake-waste-{month:%Y-%m}.csv",
        mime="text/csv",
        key="waste_download",
    )
