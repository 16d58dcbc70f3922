"""The Showback page run headlessly (AppTest) against a real runtime and a mart holding the hand-made tagged estate."""

from __future__ import annotations

import pytest

from backend.mart import allocation
from tests.allocation import helpers as h
from tests.allocation.test_mart_allocation import EDITOR, RULES
from tests.ui.conftest import app_runtime, app_server, page, pipeline, texts, ui_settings  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def estate(pipeline):  # noqa: F811
    from backend.mart.load import load_gold

    h.write(pipeline.lake)
    load_gold(pipeline.engine, pipeline.lake, run_id="seed")
    allocation.save_rules(pipeline.engine, RULES, actor=EDITOR, comment="seed")
    return pipeline


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_showback_shows_owners_the_unallocated_share_and_reports(estate):
    at = page("showback").run()
    assert not at.exception and [e.value for e in at.error] == []
    assert at.selectbox(key="showback_currency").options == ["USD", "EUR"]
    at.selectbox(key="showback_month").select(h.MARCH).run()
    assert _metric(at, "Total cost") == "$127.01"
    assert _metric(at, "Unallocated share") == "13.4%"  # 17.01 / 127.01
    assert _metric(at, "Owners") == "2"
    frames = [d.value for d in at.dataframe]
    per_owner = next(f for f in frames if "2026-03" in f.columns)
    assert per_owner.loc["payments", "2026-03"] == pytest.approx(73.333333, abs=1e-5)
    assert per_owner.loc[allocation.UNALLOCATED, "2026-03"] == pytest.approx(17.01)
    assert "What is unallocated" in texts(at)
    downloads = {d.proto.label for d in at.get("download_button")}
    assert {"Download cost per owner (CSV)", "Report (CSV)", "Printable report (HTML, print to PDF)"} <= downloads
    # The merge preview: "cost center" and "cost-center" become one key before anything is saved.
    preview = next(f for f in frames if "canonical_key" in f.columns)
    merged = preview.set_index("canonical_key").loc["cost-center"]
    assert (
        bool(merged["merges"]) and "'cost center'" in merged["keys_found"] and "'cost-center'" in merged["keys_found"]
    )
    assert "Untagged share per key over time" in texts(at)


def test_rules_edited_on_the_page_apply_at_once_and_bad_rules_save_nothing(estate):
    at = page("showback").run()
    bad = "rules:\n  - id: x\n    match: {service: a, tag: b}\n    owner: o\n"
    at.text_area(key="showback_yaml_1_").set_value(bad)
    at.button(key="showback_save_rules").click().run()
    assert not at.exception
    assert any("exactly one of" in e.value for e in at.error)
    assert at.text_area(key="showback_yaml_1_").value == bad  # the user's text stays
    assert allocation.current_rules(estate.engine).version == 1

    catch_all = RULES + "  - id: rest\n    match: {unallocated: true}\n    split: {method: even}\n"
    at.text_area(key="showback_yaml_1_").set_value(catch_all)
    at.text_input(key="showback_comment").set_value("split the rest")
    at.button(key="showback_save_rules").click().run()
    assert not at.exception and [e.value for e in at.error] == []
    assert any("rules version 2 applied" in s.value for s in at.success)
    at.selectbox(key="showback_month").select(h.MARCH).run()
    assert _metric(at, "Unallocated share") == "0.0%"
    assert allocation.list_versions(estate.engine)[0]["comment"] == "split the rest"


def test_showback_without_allocation_says_what_to_do(pipeline):  # noqa: F811
    at = page("showback").run()
    assert not at.exception and [e.value for e in at.error] == []
    assert "No cost data in the mart yet" in texts(at)
