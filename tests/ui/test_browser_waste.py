"""Real browser: the app as the README starts it loads the demo estate, and the Waste & savings page shows its
savings (negotiated, commitment, utilisation) and its idle resources, healthy (same checks as test_browser)."""

from __future__ import annotations

import re
import time

import pytest

from backend.config import REPO_ROOT
from tests.ui.test_browser import RUN_LABEL, RUN_TIMEOUT, _text, _visit, _wait, app_url, browser, page_problems  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(2400)]

SHOTS = REPO_ROOT / "artifacts" / "screenshots-waste"  # test_browser owns artifacts/screenshots (and counts it)
MONEY = re.compile(r"\$\d[\d,.]*k?")


def _metric(driver, label: str) -> str:
    """The value shown under a metric's label ("" when the metric is not on screen)."""
    from selenium.webdriver.common.by import By

    for card in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        if card.text.startswith(label):
            value = card.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]')
            return value[0].text if value else ""
    return ""


def test_waste_and_savings_page_on_the_demo_estate(app_url, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    _visit(browser, app_url, "pipeline", "Pipeline")

    def first_run_ended(d):
        ended = [m.group(3) for m in RUN_LABEL.finditer(_text(d)) if m.group(3) != "running"]
        if not ended and not RUN_LABEL.search(_text(d)):
            d.refresh()  # the queued first run was not recorded yet when the page loaded
            time.sleep(5)
        return ended[0] if ended else None

    first = _wait(browser, first_run_ended, RUN_TIMEOUT, "the first (demo estate) run to end")
    assert first == "succeeded", f"the demo estate load {first}; page text:\n{_text(browser)[:2000]}"

    _visit(browser, app_url, "waste", "Waste & savings")
    browser.save_screenshot(str(SHOTS / "waste_savings.png"))
    assert "Demo data" in _text(browser)
    # The demo is FOCUS with a negotiated discount and commitments: every savings figure is available.
    rate = _metric(browser, "Effective savings rate")
    assert re.fullmatch(r"\d+\.\d%", rate), rate
    for label in ("Negotiated savings", "Commitment savings"):
        assert MONEY.fullmatch(_metric(browser, label)), (label, _metric(browser, label))
    assert re.fullmatch(r"\d+\.\d%", _metric(browser, "Commitment utilisation"))
    assert "not available" not in _text(browser)

    tab = next(t for t in browser.find_elements(By.CSS_SELECTOR, '[role="tab"]') if t.text.strip() == "Waste")
    tab.click()
    _wait(browser, lambda d: _metric(d, "Orphan-looking resources"), 60, "the waste tab")
    time.sleep(1.0)
    browser.save_screenshot(str(SHOTS / "waste_findings.png"))
    # The idle resources of rg-legacy: an unattached disk, an idle IP and a stopped VM, and a zero-quantity fee.
    orphans = _metric(browser, "Orphan-looking resources")
    assert MONEY.fullmatch(orphans) and orphans != "$0.00", orphans
    card = next(c for c in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
                if c.text.startswith("Orphan-looking resources"))  # fmt: skip
    found = re.search(r"(\d+) resources", card.text)
    assert found and int(found.group(1)) >= 3, card.text  # at least rg-legacy's disk, IP and VM
    assert MONEY.fullmatch(_metric(browser, "Cost without usage")) and _metric(browser, "Cost without usage") != "$0.00"
    text = _text(browser)
    for rule in ("Unattached managed disk", "Idle public IP address", "Stopped but billed VM"):
        assert rule in text
    assert any("Download waste findings" in b.text for b in browser.find_elements(By.TAG_NAME, "button"))
    problems = page_problems(browser)
    assert not problems, f"the Waste & savings page is not healthy: {problems}; page text:\n{text[:2000]}"
