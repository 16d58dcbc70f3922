"""Real browser: the app as the README starts it loads the demo estate with its allocation rules, and the Showback
page shows owners, the unallocated share and the report downloads, healthy (same checks as test_browser)."""

from __future__ import annotations

import re
import time

import pytest

from backend.config import REPO_ROOT
from tests.ui.test_browser import RUN_LABEL, RUN_TIMEOUT, _text, _visit, _wait, app_url, browser, page_problems  # noqa: F401
from tests.ui.test_browser_waste import _metric

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(2400)]

SHOTS = REPO_ROOT / "artifacts" / "screenshots-showback"  # test_browser owns artifacts/screenshots (and counts it)
SHARE = re.compile(r"\d+\.\d%")


def test_showback_page_on_the_demo_estate(app_url, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    _visit(browser, app_url, "pipeline", "Pipeline")

    def first_run_ended(d):
        ended = [m.group(3) for m in RUN_LABEL.finditer(_text(d)) if m.group(3) != "running"]
        if not ended and not RUN_LABEL.search(_text(d)):
            d.refresh()
            time.sleep(5)
        return ended[0] if ended else None

    first = _wait(browser, first_run_ended, RUN_TIMEOUT, "the first (demo estate) run to end")
    assert first == "succeeded", f"the demo estate load {first}; page text:\n{_text(browser)[:2000]}"

    _visit(browser, app_url, "showback", "Showback")
    browser.save_screenshot(str(SHOTS / "showback.png"))
    text = _text(browser)
    assert "Demo data" in text and "Rules version 1 in force" in text
    share = _metric(browser, "Unallocated share")
    assert SHARE.fullmatch(share) and share != "100.0%", share  # the demo's rules allocate most of the cost
    assert int(_metric(browser, "Owners")) >= 3
    assert "Cost per owner per month" in text
    buttons = " ".join(b.text for b in browser.find_elements(By.TAG_NAME, "button"))
    for label in ("Download cost per owner (CSV)", "Report (CSV)", "Printable report (HTML, print to PDF)"):
        assert label in buttons

    tab = next(t for t in browser.find_elements(By.CSS_SELECTOR, '[role="tab"]') if t.text.strip() == "Tag hygiene")
    tab.click()
    _wait(browser, lambda d: "Untagged share per key over time" in _text(d), 60, "the tag hygiene tab")
    time.sleep(1.0)
    browser.save_screenshot(str(SHOTS / "showback_tags.png"))
    assert "merge spellings" in _text(browser)
    problems = page_problems(browser)
    assert not problems, f"the Showback page is not healthy: {problems}; page text:\n{_text(browser)[:2000]}"
