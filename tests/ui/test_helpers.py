"""The pages' pure helpers: money formatting, the explorer's URL state, a run's ingest details from step JSON."""

from __future__ import annotations

import pandas as pd

from app import charts, fmt, ops
from app.explorer_state import ExplorerView, from_params


def test_money_scales():
    assert fmt.money(43210, "EUR") == "€43.21k"
    assert fmt.money(9999.5, "USD") == "$9,999.50"
    assert fmt.money(-2_500_000, "EUR") == "-€2.50M"
    assert fmt.money(None) == "–"


def test_explorer_view_round_trip_and_legacy_grains():
    view = ExplorerView("tag:env", "weekly", "amortized", "bar", filters={"service": ["Storage", "VMs"]})
    params = {k: v if isinstance(v, list) else [v] for k, v in view.to_params().items()}
    assert from_params(params) == view
    old_link = from_params({"group": ["region"], "grain": ["month"], "f.nope": ["x"], "metric": ["weird"]})
    assert (old_link.group_by, old_link.grain, old_link.metric, old_link.filters) == ("region", "monthly", "actual", {})


def test_ingest_details_from_step_json():
    steps = pd.DataFrame(
        [
            {"step": "ingest", "detail": {"batches": [{"source": "demo", "batch": "b1", "chunks": 3}], "inbox": []}},
            {
                "step": "bronze",
                "detail": '{"dead_letters": 1, "bronze_rows": 9, "committed_batches": ["b1", "file-1"],'
                ' "batches_not_in_bronze": ["file-2"]}',
            },
        ]
    )
    details = ops.ingest_details(steps)
    assert details is not None
    assert details.batches.set_index("batch")["state"].to_dict() == {
        "b1": "committed",
        "file-1": "committed",
        "file-2": "not in bronze",
    }
    assert (details.dead_letters, details.bronze_rows, details.not_in_bronze) == (1, 9, 1)
    assert ops.ingest_details(pd.DataFrame([{"step": "mart", "detail": {}}])) is None


def _cost_frame() -> pd.DataFrame:
    days = pd.date_range("2026-01-01", periods=20)
    rows = [(d, f"svc{g}", "EUR", float((g + 1) * 10 + i)) for i, d in enumerate(days) for g in range(13)]
    rows = [r for r in rows if not (r[1] == "svc12" and r[0].day == 5)]  # a gap stays a gap
    return pd.DataFrame(rows, columns=["period", "group", "currency", "cost"])


def test_fast_figures_pass_plotly_validation():
    """The hot charts skip plotly's validation when built; the same dicts must pass it, as streamlit would
    otherwise only find out in the browser."""
    import plotly.graph_objects as go

    for kind in ("area", "bar"):
        fig = charts.stacked(_cost_frame(), kind=kind, currency="EUR")
        checked = go.Figure(fig.to_dict())  # validates every property; raises on a bad one
        names = [t.name for t in checked.data]
        folded = charts.top_groups(_cost_frame(), 10).groupby("group")["cost"].sum()
        assert names == list(folded.sort_values(ascending=False).index) and len(names) == 11 and "Other" in names
        assert {f"svc{g}" for g in range(3)}.isdisjoint(names)  # the three smallest fold into Other
        assert {t.type for t in checked.data} == {"scatter" if kind == "area" else "bar"}
        if kind == "area":
            assert {t.stackgroup for t in checked.data} == {"one"}
        assert checked.layout.yaxis.title.text == "cost (EUR)" and checked.layout.barmode == "stack"
        svc12 = fig.data[0]
        assert list(svc12.y[:2]) == [130.0, 131.0] and len(svc12.x) == 19  # a missing day is no point
        other = next(t for t in fig.data if t.name == "Other")
        assert len(other.x) == 20 and other.y[0] == 10.0 + 20.0 + 30.0
    bars = charts.daily_bars(pd.DataFrame({"day": pd.date_range("2026-01-01", periods=3), "cost": [1.0, 2.0, 3.0]}))
    go.Figure(bars.to_dict())
    assert list(bars.data[0].y) == [1.0, 2.0, 3.0]
    assert charts.stacked(_cost_frame().iloc[0:0]).data == ()
