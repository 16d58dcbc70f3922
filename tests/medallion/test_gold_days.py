"""An increment recomputes gold only for the charge days silver's MERGE touched; every table must still equal a full rebuild."""

from __future__ import annotations

import logging

import pytest

from backend.lake import lake_from_settings
from backend.lake.catalog import GOLD_COST_CHANGES
from backend.medallion import gold
from tests.conftest import make_settings
from tests.medallion.helpers import Bronze, focus_payload, focus_row, run_medallion
from tests.medallion.test_jobs import _gold_snapshot

FOCUS = "application/vnd.apache.parquet"


def _history(bronze: Bronze) -> None:
    rows = [
        focus_row("2024-01-30", "st1", "5", "5"),
        focus_row("2024-01-31", "st1", "6", "6"),
        focus_row("2024-02-01", "st1", "7", "7"),
        focus_row("2024-02-01", "st2", "3", "3", tags='{"Env": "dev", "Owner": "ann"}'),
        focus_row("2024-02-01", "st5", "2", "2"),
        focus_row("2024-02-02", "st1", "4", "4", sub="sub-g"),
        focus_row("2024-02-02", "st4", "1", "1"),
    ]
    bronze.add("focus", focus_payload(rows), batch="f-1", content_type=FOCUS)


def _spy_daily_days(monkeypatch) -> list:
    """Records the charge days each gold.cost_daily call aggregates from silver."""
    seen: list = []
    original = gold.cost_daily

    def spy(silver, **kwargs):
        seen.append(sorted(str(r[0]) for r in silver.select("x_ChargeDate").distinct().collect()))
        return original(silver, **kwargs)

    monkeypatch.setattr(gold, "cost_daily", spy)
    return seen


def _increment_then_rebuild(spark, tmp_path, day_rows, monkeypatch, caplog):
    settings = make_settings(tmp_path)
    lake = lake_from_settings(settings)
    bronze = Bronze()
    _history(bronze)
    bronze.flush(lake)
    run_medallion(settings, lake, spark, run_id="run-1")
    for batch, rows in day_rows:
        bronze.add("focus", focus_payload(rows), batch=batch, content_type=FOCUS, fetched=5)
    bronze.flush(lake)
    seen = _spy_daily_days(monkeypatch)
    with caplog.at_level(logging.INFO, logger="backend.medallion.refine"):
        increment = run_medallion(settings, lake, spark, run_id="run-2")
    monkeypatch.undo()
    after_increment = _gold_snapshot(lake)
    run_medallion(settings, lake, spark, run_id="run-3", full_rebuild=True)
    assert _gold_snapshot(lake) == after_increment
    return increment, seen


@pytest.mark.slow
def test_an_increment_restating_a_day_leaves_gold_as_a_full_rebuild_would(spark, tmp_path, monkeypatch, caplog):
    # 2024-02-01 is pulled again: st1 costs more, st5 is gone, st2 (the month's only "owner" key) stays;
    # 2024-02-03 is new and untagged (its rows report "untagged" for the month's keys). 2024-02-02 is
    # not touched: its rows come from stored gold.
    restated = [
        focus_row("2024-02-01", "st1", "8", "7.5"),
        focus_row("2024-02-01", "st2", "3", "3", tags='{"Env": "dev", "Owner": "ann"}'),
    ]
    new_day = [focus_row("2024-02-03", "st1", "20", "18"), focus_row("2024-02-03", "st3", "2", "2", tags="")]
    increment, seen = _increment_then_rebuild(
        spark, tmp_path, [("f-2", restated), ("f-3", new_day)], monkeypatch, caplog
    )
    assert increment.affected_months == ["2024-02"]
    assert increment.touched_days == {"2024-02": ["2024-02-01", "2024-02-03"]}
    assert seen == [["2024-02-01", "2024-02-03"]]  # silver aggregated for the touched days only
    assert "recomputing those months whole" not in caplog.text  # cost_by_tag kept 2024-02-02 as stored


@pytest.mark.slow
def test_an_increment_bringing_a_new_tag_key_leaves_gold_as_a_full_rebuild_would(spark, tmp_path, monkeypatch, caplog):
    # A key the month has not seen: every other day of the month gets "untagged" rows for it.
    new_day = [focus_row("2024-02-03", "st1", "20", "18", tags='{"Env": "prod", "CostCenter": "42"}')]
    increment, seen = _increment_then_rebuild(spark, tmp_path, [("f-2", new_day)], monkeypatch, caplog)
    assert increment.touched_days == {"2024-02": ["2024-02-03"]}
    assert seen == [["2024-02-03"]]
    assert "recomputing those months whole" in caplog.text


@pytest.mark.slow
def test_an_increment_dropping_a_months_only_tag_key_leaves_gold_as_a_full_rebuild_would(
    spark, tmp_path, monkeypatch, caplog
):
    # st2 on 2024-02-01 carried the month's only "owner" key; its re-pull drops the key, so the month's
    # other days must lose their "untagged" rows for it.
    restated = [focus_row("2024-02-01", "st1", "7", "7"), focus_row("2024-02-01", "st2", "3", "3", tags="")]
    increment, _ = _increment_then_rebuild(spark, tmp_path, [("f-2", restated)], monkeypatch, caplog)
    assert increment.touched_days == {"2024-02": ["2024-02-01"]}
    assert "recomputing those months whole" in caplog.text


@pytest.mark.slow
def test_an_increment_after_a_gap_lets_the_old_last_day_say_stopped(spark, tmp_path, monkeypatch, caplog):
    # 2024-02-05 comes after two days without data: 2024-02-02 is no longer the data's last day, so its
    # resources now stop there, although it is neither touched nor next to a touched day.
    new_day = [focus_row("2024-02-05", "st1", "20", "18")]
    increment, seen = _increment_then_rebuild(spark, tmp_path, [("f-2", new_day)], monkeypatch, caplog)
    assert increment.touched_days == {"2024-02": ["2024-02-05"]}
    assert seen == [["2024-02-05"]]
    lake = lake_from_settings(make_settings(tmp_path))
    events = {(str(r["event_date"]), r["event"]) for r in lake.read_arrow(GOLD_COST_CHANGES.name).to_pylist()}
    assert ("2024-02-02", "stopped") in events
