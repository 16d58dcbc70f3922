"""The evaluation's scoring: events vs labels, recall over the labels sized for a level, detection delay."""

from __future__ import annotations

import pandas as pd

from bench.analytics_evaluation import label_scope, score_detection


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "member": ["a", "b"],
            "start_date": pd.to_datetime(["2025-03-10", "2025-03-20"]),
            "end_date": pd.to_datetime(["2025-03-12", "2025-03-20"]),
            "size_per_day": [50.0, 5.0],
        }
    )


def _series() -> pd.DataFrame:
    days = pd.date_range("2025-02-01", "2025-03-31", freq="D")
    return pd.concat(
        [pd.DataFrame({"member": m, "charge_date": days, "cost": c}) for m, c in (("a", 100.0), ("b", 1000.0))]
    )


def _alerts(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"member": [m for m, _ in rows], "charge_date": pd.to_datetime([d for _, d in rows])})


def test_label_scope_keeps_labels_sized_for_the_member():
    # 50/day on a 100/day member is sized for it; 5/day on a 1000/day member is not (0.5%).
    assert label_scope(_labels(), _series()).tolist() == [True, False]
    assert label_scope(_labels(), _series(), min_relative=0.6).tolist() == [False, False]


def test_recall_counts_only_labels_in_scope_and_hits_on_any_label_are_true():
    truth = _labels().assign(in_scope=[True, False])
    # One alert event on each label, one unexplained event, one late-detected day.
    score = score_detection(
        _alerts(("a", "2025-03-10"), ("a", "2025-03-11"), ("b", "2025-03-20"), ("a", "2025-03-25")), truth
    )
    assert score["labels"] == 1 and score["missed"] == 0 and score["recall"] == 1.0
    assert score["events"] == 3 and score["false_events"] == 1
    assert abs(score["precision"] - 2 / 3) < 1e-9


def test_a_label_found_two_days_late_is_missed():
    truth = _labels().assign(in_scope=[True, True])
    score = score_detection(_alerts(("a", "2025-03-12"), ("b", "2025-03-20")), truth)
    assert score["missed"] == 1 and score["max_delay_days"] == 2 and score["recall"] == 0.5
