"""The pages' pure helpers: money formatting, the explorer's URL state, a run's ingest details from step JSON."""

from __future__ import annotations

import pandas as pd

from app import fmt, ops
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
