"""Contributors, kind refinement and feedback suppression."""

from __future__ import annotations

import pandas as pd

from backend.analytics.analyze import (
    contributors,
    refine_kind,
    series_anomalies,
    series_forecasts,
    suppressed_by_feedback,
)
from backend.analytics.detect import DetectorParams

DAYS = pd.date_range("2025-03-03", periods=70, freq="D")


def test_contributors_name_the_child_that_moved_and_new_cost():
    rows = []
    for d in DAYS:
        rows.append(("vm-1", d, 50.0, "D4s v5"))
        rows.append(("vm-2", d, 30.0, "D2s v5"))
    rows.append(("vm-new", DAYS[-1], 40.0, "E8s v5"))
    kids = pd.DataFrame(rows, columns=["child", "charge_date", "cost", "meter"])
    anomaly = pd.Series({"charge_date": DAYS[-1], "impact": 40.0})
    items = contributors(anomaly, kids, DetectorParams())
    assert items[0]["value"] == "vm-new" and items[0]["meter"] == "E8s v5" and items[0]["delta"] == 40.0
    assert refine_kind("spike", items, 40.0) == "new_cost"


def test_feedback_expected_suppresses_the_same_pattern_only():
    anomalies = pd.DataFrame(
        {
            "level": ["service", "service", "service"],
            "member": ["Bandwidth", "Bandwidth", "Functions"],
            "kind": ["spike", "spike", "spike"],
            "charge_date": pd.to_datetime(["2025-06-10", "2025-06-20", "2025-06-20"]),
            "impact": [100.0, 500.0, 100.0],
        }
    )
    feedback = pd.DataFrame(
        {
            "feedback_id": [7],
            "level": ["service"],
            "dimension_value": ["Bandwidth"],
            "kind": ["spike"],
            "verdict": ["expected"],
            "suppress_until": [None],
            "marked_date": [pd.Timestamp("2025-06-01")],
            "marked_impact": [120.0],
        }
    )
    by = suppressed_by_feedback(anomalies, feedback, default_days=90)
    assert by.tolist()[0] == 7  # same member, kind, similar size
    assert pd.isna(by.tolist()[1])  # 4x the marked size: a new problem
    assert pd.isna(by.tolist()[2])  # another member


def test_series_wrappers_fill_missing_days_and_emit_totals():
    series = pd.DataFrame(
        {"level": "service", "member": "X", "metric": "actual", "charge_date": DAYS[::2], "cost": 10.0}
    )
    found = series_anomalies(series, DetectorParams(), start=DAYS[0], end=DAYS[-1], since=DAYS[-7])
    assert found.empty  # alternate zero days are a stable pattern, not seven anomalies
    fc = series_forecasts(
        series,
        __import__("backend.analytics.forecast", fromlist=["ForecastParams"]).ForecastParams(
            calibration_origins=10, horizon_days=10
        ),
        start=DAYS[0],
        end=DAYS[-1],
    )
    assert set(fc["row_type"]) == {"day", "month_end", "next_days"}
    assert (fc["row_type"] == "day").sum() == 10
