"""Plotly figure builders: every chart in the app is made here, so the pages stay thin and look alike."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

PALETTE = ["#0F6CBD", "#E3008C", "#00A36C", "#F7630C", "#8764B8", "#13A10E", "#D13438", "#4F6BED", "#CA5010",
           "#038387", "#8E8CD8"]  # fmt: skip
LAYOUT = {"margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "legend": {"orientation": "h", "y": -0.15}, "height": 380}


def top_groups(frame: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """Keep the n biggest groups (by total cost) and fold the rest into "Other", so a chart stays readable."""
    if frame.empty or frame["group"].nunique() <= n:
        return frame
    keep = frame.groupby("group")["cost"].sum().abs().nlargest(n).index
    out = frame.assign(group=frame["group"].where(frame["group"].isin(keep), "Other"))
    return out.groupby(["period", "group", "currency"], as_index=False)["cost"].sum()


def stacked(frame: pd.DataFrame, *, kind: str = "area", currency: str = "", top: int = 10) -> go.Figure:
    """Cost per period stacked by group (frame: period, group, cost), the top groups and "Other"."""
    frame = top_groups(frame, top)
    fig = go.Figure()
    order = frame.groupby("group")["cost"].sum().sort_values(ascending=False).index
    for i, member in enumerate(order):
        part = frame[frame["group"] == member].sort_values("period")
        color = PALETTE[i % len(PALETTE)] if member != "Other" else "#A0A0A0"
        if kind == "bar":
            fig.add_bar(x=part["period"], y=part["cost"], name=str(member), marker_color=color)
        else:
            fig.add_scatter(x=part["period"], y=part["cost"], name=str(member), mode="lines", stackgroup="one",
                            line={"width": 0.5, "color": color})  # fmt: skip
    fig.update_layout(barmode="stack", yaxis_title=f"cost ({currency})" if currency else "cost", **LAYOUT)
    return fig


def daily_with_band(series: pd.DataFrame, band: pd.DataFrame | None = None, *, currency: str = "") -> go.Figure:
    """A daily series with its expected band and anomaly markers (band: day, lower_bound, upper_bound,
    expected, actual, status)."""
    fig = go.Figure()
    if band is not None and not band.empty and band["upper_bound"].notna().any():
        fig.add_scatter(x=band["day"], y=band["upper_bound"], mode="lines", line={"width": 0}, showlegend=False,
                        hoverinfo="skip")  # fmt: skip
        fig.add_scatter(x=band["day"], y=band["lower_bound"], mode="lines", line={"width": 0}, fill="tonexty",
                        fillcolor="rgba(15,108,189,0.15)", name="expected band")  # fmt: skip
        fig.add_scatter(x=band["day"], y=band["expected"], mode="lines", line={"dash": "dot", "color": "#0F6CBD"},
                        name="expected")  # fmt: skip
    if not series.empty:
        fig.add_scatter(x=series["day"], y=series["cost"], mode="lines", name="cost", line={"color": "#1B1F24"})
    if band is not None and not band.empty:
        colors = band["status"].map({"open": "#D13438", "expected": "#A0A0A0", "resolved": "#00A36C"}).fillna("#D13438")
        fig.add_scatter(x=band["day"], y=band["actual"], mode="markers", name="anomaly",
                        marker={"size": 11, "color": colors, "symbol": "diamond", "line": {"width": 1, "color": "white"}})  # fmt: skip
    fig.update_layout(yaxis_title=f"cost ({currency})" if currency else "cost", **LAYOUT)
    return fig


def burn(
    burn_frame: pd.DataFrame, *, amount: float, period_end, currency: str = "", forecast: float | None = None
) -> go.Figure:
    """Cumulative spend of a budget period against its amount (and the forecast end point when known)."""
    fig = go.Figure()
    if not burn_frame.empty:
        fig.add_scatter(x=burn_frame["day"], y=burn_frame["cumulative"], mode="lines", name="spent", fill="tozeroy",
                        line={"color": "#0F6CBD"})  # fmt: skip
        if forecast is not None:
            last = burn_frame.iloc[-1]
            fig.add_scatter(x=[last["day"], pd.Timestamp(period_end)], y=[last["cumulative"], forecast], mode="lines",
                            name="forecast", line={"dash": "dash", "color": "#F7630C"})  # fmt: skip
    fig.add_hline(y=amount, line={"color": "#D13438", "dash": "dot"}, annotation_text="budget")
    fig.update_layout(yaxis_title=f"cumulative ({currency})" if currency else "cumulative", **{**LAYOUT, "height": 280})
    return fig


def daily_bars(frame: pd.DataFrame, *, currency: str = "") -> go.Figure:
    fig = go.Figure(go.Bar(x=frame["day"], y=frame["cost"], marker_color="#0F6CBD", name="daily cost"))
    fig.update_layout(yaxis_title=f"cost ({currency})" if currency else "cost", **{**LAYOUT, "height": 280})
    return fig
