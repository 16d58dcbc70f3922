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


def _fast_figure(traces: list[dict], layout: dict) -> go.Figure:
    """A figure from plain trace and layout dicts without plotly's per-property validation, which cost more
    than the queries on the hot pages; the builders below only use properties the validated path accepts
    (tests/ui/test_helpers.py compares both)."""
    return go.Figure(data=traces, layout=layout, _validate=False)


def stacked(frame: pd.DataFrame, *, kind: str = "area", currency: str = "", top: int = 10) -> go.Figure:
    """Cost per period stacked by group (frame: period, group, cost), the top groups and "Other"."""
    frame = top_groups(frame, top)
    traces = []
    if not frame.empty:
        # One pivot instead of a boolean filter per group; a member's missing periods stay gaps, as before.
        wide = frame.groupby(["period", "group"])["cost"].sum().unstack()  # pivot_table costs ~5x more
        order = wide.sum().sort_values(ascending=False, kind="stable").index
        for i, member in enumerate(order):
            column = wide[member]
            present = column.notna().to_numpy()
            x, y = wide.index[present], column.to_numpy()[present]
            color = PALETTE[i % len(PALETTE)] if member != "Other" else "#A0A0A0"
            if kind == "bar":
                traces.append({"type": "bar", "x": x, "y": y, "name": str(member), "marker": {"color": color}})
            else:
                traces.append({"type": "scatter", "x": x, "y": y, "name": str(member), "mode": "lines",
                               "stackgroup": "one", "line": {"width": 0.5, "color": color}})  # fmt: skip
    title = f"cost ({currency})" if currency else "cost"
    return _fast_figure(traces, {"barmode": "stack", "yaxis": {"title": {"text": title}}, **LAYOUT})


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
    trace = {"type": "bar", "x": frame["day"].to_numpy(), "y": frame["cost"].to_numpy(), "name": "daily cost",
             "marker": {"color": "#0F6CBD"}}  # fmt: skip
    title = f"cost ({currency})" if currency else "cost"
    return _fast_figure([trace], {"yaxis": {"title": {"text": title}}, **{**LAYOUT, "height": 280}})
