"""The Waste & savings page run headlessly (AppTest) against a real runtime and a mart holding the hand-made estate."""

from __future__ import annotations

import pytest

from tests.finops import helpers as h
from tests.ui.conftest import app_runtime, app_server, page, pipeline, texts, ui_settings  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def estate(pipeline):  # noqa: F811
    from backend.mart.load import load_gold

    h.write(pipeline.lake, h.estate(), h.changes())
    load_gold(pipeline.engine, pipeline.lake, run_id="seed")


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_waste_page_shows_savings_and_waste(estate):
    at = page("waste").run()
    assert not at.exception and [e.value for e in at.error] == []
    # Two currencies: the page asks, and starts on the first (EUR: an Azure export without contracted cost).
    assert at.selectbox(key="waste_currency").options == ["EUR", "USD"]
    assert _metric(at, "Effective savings rate") == "50.0%"
    assert _metric(at, "Negotiated savings") == "not available"
    assert _metric(at, "Commitment utilisation") == "not available"
    assert "do not carry ContractedCost" in texts(at)

    at.selectbox(key="waste_currency").select("USD").run()
    assert not at.exception
    assert _metric(at, "Negotiated savings") == "$3.00"
    assert _metric(at, "Commitment savings") == "$3.50"
    assert _metric(at, "Effective savings rate") == "17.7%"  # 7.50 / 42.44
    assert _metric(at, "Commitment utilisation") == "85.7%"  # 12 / 14
    assert _metric(at, "Orphan-looking resources") == "$2.74"  # disk 2 + stopped VM 0.50 + IP 0.24
    assert _metric(at, "Cost without usage") == "$1.20"
    assert _metric(at, "Cost started / stopped") == "1 / 1"
    body = texts(at)
    assert "Orphan-looking resources" in body and "Unattached managed disk" in body
    frames = [d.value for d in at.dataframe]
    orphan = next(f for f in frames if "meters" in f.columns)
    assert list(orphan["resource_id"]) == [h.DISK1, h.VM2, h.PIP1]
    assert orphan["link"].iloc[0] == "https://portal.azure.com/#@/resource" + h.DISK1
    assert at.get("download_button")


def test_waste_page_on_an_empty_mart_says_what_to_do(pipeline):  # noqa: F811
    at = page("waste").run()
    assert not at.exception and [e.value for e in at.error] == []
    assert "No cost data in the mart yet" in texts(at)
