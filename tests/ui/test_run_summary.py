"""The run history's pure shaping: a step's detail JSON as one line, and the run and step tables as text cells."""

from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import pytest

from app import fmt
from app.run_history import failed_steps, parse_detail, runs_table, step_summary, steps_table

MONTHS_13 = [f"2025-{m:02d}" for m in (10, 11, 12)] + [f"2026-{m:02d}" for m in range(1, 11)]

# Details shaped as backend.pipeline.steps records them.
KNOWN = [
    (
        "ingest",
        {
            "batches": [
                {"source": "demo", "batch": "b1", "chunks": 4},
                {"source": "azure", "batch": "b2", "chunks": 1},
            ],
            "inbox": [{"file": "a.csv", "status": "imported", "detail": "FOCUS"}],
            "skipped_files": [{"file": "old.csv", "detail": "already imported"}],
        },
        "2 batches (azure, demo), 1 inbox file (1 imported), 1 file already in bronze",
    ),
    (
        "bronze",
        {
            "bronze_rows": 12,
            "dead_letters": 2,
            "skipped_replays": 0,
            "committed_batches": ["run-demo-1"],
            "batches_not_in_bronze": ["file-abc"],
        },
        "12 rows into bronze, 2 dead letters, 1 batch committed, 1 batch not in bronze (fetched again next run)",
    ),
    (
        "silver",
        {
            "valid_rows": 4_916_276,
            "quarantined": 0,
            "superseded": 0,
            "removed_by_rerating": 0,
            "affected_months": MONTHS_13,
        },
        "4,916,276 rows valid, 0 quarantined, months 2025-10…2026-10",
    ),
    (
        "silver",
        {"valid_rows": 1, "quarantined": 3, "superseded": 7, "affected_months": ["2026-01"]},
        "1 row valid, 3 quarantined, 7 superseded, month 2026-01",
    ),
    (
        "gold",
        {"tables": {"cost_daily": 5_000_000, "a": 104_063, "b": 0, "c": 0, "d": 0, "e": 0}, "affected_months": "all"},
        "6 tables, 5,104,063 rows, all months",
    ),
    ("gold", {"affected_months": []}, "nothing to recompute"),
    (
        "mart",
        {
            "load_id": 3,
            "months": MONTHS_13,
            "rows_in": 4_900_000,
            "rows_loaded": 4_900_000,
            "rows_replaced": 0,
            "dims_added": {"service": 2},
            "gold_versions": {"gold/cost_daily": 7},
            "seconds": 12.3,
            "phase_seconds": {"copy": 8.1},
            "reconciliation": {"check_id": 1, "days": 396, "mismatches": 0},
        },
        "loaded 4.9M rows, 13 months, 396 days reconciled, 0 mismatches",
    ),
    ("mart", {"months": []}, "nothing to load"),
    (
        "analytics",
        {"series": 412, "as_of": "2026-10-31", "suppressed": 0, "anomalies": 38, "forecast_rows": 12_000, "seconds": 9},
        "38 anomalies, 412 series, 12,000 forecast rows, as of 2026-10-31",
    ),
    ("analytics", {"series": 1, "anomalies": 1, "forecast_rows": 0}, "1 anomaly, 1 series, 0 forecast rows"),
    (
        "budgets",
        {"budgets": 3, "alerts": 1, "webhooks_delivered": 1, "webhooks_failed": 2},
        "3 budgets, 1 alert, webhooks 1 delivered, 2 failed",
    ),
    # A step this module does not know, or a known step whose keys it does not find: scalar k=v only.
    (
        "reconcile",
        {"check_id": 4, "tolerance": 0.01, "ok": True, "rows": [1, 2], "by": {"x": 1}},
        "check_id=4, tolerance=0.01, ok=True",
    ),
    ("mart", {"step": "mart"}, "step=mart"),
    (None, {"a": 1_234_567, "b": None, "c": float("nan")}, "a=1,234,567"),
]


@pytest.mark.parametrize(("step", "detail", "expected"), KNOWN)
def test_known_steps_read_as_a_sentence(step, detail, expected):
    assert step_summary(step, detail) == expected


def test_detail_stored_as_json_text_reads_the_same():
    step, detail, expected = KNOWN[2]
    assert step_summary(step, json.dumps(detail)) == expected


ODD = [
    None,
    {},
    [],
    "",
    "   ",
    "not json",
    "[1, 2, 3]",
    '{"valid_rows": "many"}',
    42,
    3.5,
    True,
    float("nan"),
    float("inf"),
    pd.NA,
    pd.NaT,
    object(),
    [{"a": 1}, [2]],
    {"tables": "oops", "affected_months": 7},
    {"tables": {"a": "x", "b": None, "c": [1]}, "affected_months": [None, {"m": 1}, "2026-01", 202601]},
    {"rows_loaded": "x", "months": "y", "reconciliation": [1]},
    {"reconciliation": {"mismatches": None}, "rows_loaded": float("nan")},
    {"batches": None, "inbox": "x", "skipped_files": 3},
    {"batches": [None, 1, {"source": None}], "inbox": [{"status": None}, "file"]},
    {"bronze_rows": float("inf"), "dead_letters": True, "committed_batches": None},
    {"anomalies": float("nan"), "series": "412", "as_of": 20261031},
    {"nested": {"deep": {"deeper": [1, {"x": 2}]}}},
    {1: "int key", None: "none key", ("t",): "tuple key"},
    {"budgets": -1, "alerts": 10**30, "webhooks_delivered": None, "webhooks_failed": 1},
]


@pytest.mark.parametrize("step", ["ingest", "bronze", "silver", "gold", "mart", "analytics", "budgets", "new", None, 7])
@pytest.mark.parametrize("detail", ODD, ids=range(len(ODD)))
def test_any_shape_gives_a_short_line_and_never_a_raw_dict(step, detail):
    text = step_summary(step, detail)
    assert isinstance(text, str)
    assert "{" not in text and "[" not in text
    assert len(text) <= 160


def test_only_nested_values_point_to_the_raw_view():
    assert step_summary("new", {"tables": {"a": 1}, "months": ["2026-01"], "empty": []}) == (
        "tables, months (see raw step details)"
    )


@pytest.mark.parametrize("detail", [None, {}, [], "", float("nan"), pd.NA])
def test_nothing_recorded_is_an_empty_summary(detail):
    assert step_summary("silver", detail) == ""


def test_long_details_are_cut_with_an_ellipsis():
    text = step_summary("new", {f"key_{i}": i for i in range(100)}, limit=60)
    assert len(text) <= 60 and text.endswith("…")


def test_parse_detail_takes_dicts_json_text_and_missing_values():
    assert parse_detail({"a": 1}) == {"a": 1}
    assert parse_detail('{"a": 1}') == {"a": 1}
    assert parse_detail("plain text") == "plain text"
    assert parse_detail(None) is None and parse_detail(float("nan")) is None and parse_detail("") is None


def test_counts_and_times_formatting():
    assert (fmt.count(4_916_276), fmt.count(12.0), fmt.count(None), fmt.count(math.nan), fmt.count("x")) == (
        "4,916,276",
        "12",
        "–",
        "–",
        "x",
    )
    assert (fmt.compact_count(4_916_276), fmt.compact_count(12_345), fmt.compact_count(412)) == ("4.9M", "12.3k", "412")
    assert (fmt.seconds(12.345), fmt.seconds(None), fmt.seconds(pd.NaT)) == ("12.3", "–", "–")
    at = dt.datetime(2026, 11, 21, 16, 28, 36, 500, tzinfo=dt.UTC)
    assert fmt.short_time(at, tz=dt.UTC) == "21 Nov 16:28:36"
    assert fmt.short_time(pd.Timestamp(at), tz=dt.timezone(dt.timedelta(hours=1))) == "21 Nov 17:28:36"
    assert fmt.short_time(at.replace(tzinfo=None), tz=dt.UTC) == "21 Nov 16:28:36"  # naive means UTC
    assert (fmt.short_time(None), fmt.short_time(pd.NaT)) == ("–", "–")


def _cells(frame: pd.DataFrame) -> list[str]:
    return [str(v) for v in frame.to_numpy().ravel()]


def test_steps_table_as_an_operator_reads_it():
    t0 = dt.datetime(2026, 11, 21, 16, 0, tzinfo=dt.UTC)
    # Built like app.run_history.run_steps: pandas turns the missing ints into NaN and the missing times into NaT.
    steps = pd.DataFrame(
        [
            ["ingest", 0, "succeeded", t0, t0, None, 4_916_276, None, {"batches": []}, 3.21],
            ["silver", 1, "failed", t0, t0, None, None, "ValueError: boom", None, 61.0],
            ["gold", 2, "skipped", None, None, None, None, None, None, None],
        ],
        columns=[
            "step",
            "ordinal",
            "status",
            "started_at",
            "finished_at",
            "rows_in",
            "rows_out",
            "error",
            "detail",
            "seconds",
        ],
    )
    table = steps_table(steps)
    assert list(table.columns) == ["step", "status", "started", "seconds", "rows in", "rows out", "summary"]
    assert table["status"].tolist() == ["✅ succeeded", "❌ failed", "⏭️ skipped"]
    assert table["seconds"].tolist() == ["3.2", "61.0", "–"]
    assert table["rows in"].tolist() == ["–", "–", "–"] and table["rows out"].tolist() == ["4,916,276", "–", "–"]
    assert table["summary"].tolist() == ["0 batches", "", ""]
    assert table["started"].iloc[2] == "–"
    assert not any(c in ("None", "nan", "NaN", "NaT", "<NA>") for c in _cells(table))
    assert failed_steps(steps) == [("silver", "ValueError: boom")]
    assert steps_table(steps.iloc[0:0]).columns.tolist() == table.columns.tolist()


def test_runs_table_keeps_the_order_and_shows_no_none():
    t0 = dt.datetime(2026, 11, 21, 16, 0, tzinfo=dt.UTC)
    runs = pd.DataFrame(
        [
            ["r2", "manual", "running", t0, None, None, None, None, 12.34],
            ["r1", "schedule", "failed", t0, t0, 10, 5, "mart: LoadError", 99.0],
            ["r0", "schedule", "succeeded", t0, t0, 1_000_000, 999_999, None, 1.0],
        ],
        columns=["run_id", "trigger", "status", "started_at", "finished_at", "rows_in", "rows_out", "error", "seconds"],
    )
    table = runs_table(runs)
    assert table["run_id"].tolist() == ["r2", "r1", "r0"]
    assert table["status"].tolist() == ["⏳ running", "❌ failed", "✅ succeeded"]
    assert table["finished"].iloc[0] == "–" and table["error"].tolist() == ["", "mart: LoadError", ""]
    assert table["rows in"].tolist() == ["–", "10", "1,000,000"]
    assert not any(c in ("None", "nan", "NaN", "NaT", "<NA>") for c in _cells(table))
