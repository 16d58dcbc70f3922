"""Real browser: start the app as the README does (`python -m app.serve`, fresh DATA_DIR, free port), visit
every page in headless Debian Chromium, press "Run now", require that run to succeed, screenshot every page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.config import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(2400)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = REPO_ROOT / "artifacts" / "screenshots"
PAGES = [
    ("overview", "Overview"),
    ("explorer", "Cost explorer"),
    ("anomalies", "Anomalies"),
    ("budgets", "Budgets"),
    ("gold", "Gold tables"),
    ("pipeline", "Pipeline"),
    ("sources", "Sources & settings"),
    ("chat", "Ask about your costs"),  # "Ask Costlake" in the navigation
]
DEFAULT_PAGE = "overview"
# A full run (Spark included) on a small demo estate; the loaded CI machine needs minutes, not seconds.
RUN_TIMEOUT = 600
DEMO_ROWS = "10000"
RUN_LABEL = re.compile(r"Run (\S+) · (\S+) · (succeeded|failed|abandoned|running)")


def _free_port() -> int:
    from backend.runtime.kafka import free_port

    return free_port()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    data_dir = tmp_path_factory.mktemp("app-data")
    port = _free_port()
    log = (data_dir / "streamlit.log").open("wb")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO_ROOT),
        "SPARK_DRIVER_MEMORY": "1g",
        "DEMO_ROWS": DEMO_ROWS,
    }
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "LAKE_URI"):
        env.pop(name, None)  # the README's path: everything embedded under DATA_DIR
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.serve",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],  # fmt: skip
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"streamlit did not come up; log: {(data_dir / 'streamlit.log').read_text()[-3000:]}")
    yield url
    proc.terminate()  # SIGTERM: streamlit runs atexit, which releases the embedded servers
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _wait(driver, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; page text:\n{_text(driver)[:2000]}")


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _settled(driver, title: str) -> bool:
    """The page's title is drawn and Streamlit is no longer running the script."""
    from selenium.webdriver.common.by import By

    heads = [h.text for h in driver.find_elements(By.TAG_NAME, "h1")]
    running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
    return any(h.strip() == title for h in heads) and not running


def _visit(driver, url: str, name: str, title: str) -> None:
    # The default page lives at "/": its url_path would answer "Page not found" and fall back to it.
    driver.get(f"{url}/" if name == DEFAULT_PAGE else f"{url}/{name}")
    _wait(driver, lambda d: _settled(d, title), 180, f"page {name}")
    time.sleep(1.0)  # charts draw after the script run
    assert "Traceback" not in _text(driver) and "Page not found" not in _text(driver)


def test_every_page_and_run_now(app_url, browser):
    from selenium.webdriver.common.by import By

    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)

    _visit(browser, app_url, "pipeline", "Pipeline")

    def run_button(d):
        buttons = [b for b in d.find_elements(By.TAG_NAME, "button") if "Run now" in b.text]
        return buttons[0] if buttons and buttons[0].is_enabled() else None

    last_refresh = [time.monotonic()]

    def first_run_ended(d):
        text = _text(d)
        ended = [m.group(3) for m in RUN_LABEL.finditer(text) if m.group(3) != "running"]
        if not ended and not RUN_LABEL.search(text) and time.monotonic() - last_refresh[0] > 5:
            # The queued first run had not been recorded when the page loaded: the page only polls while
            # a run is going, so look again.
            last_refresh[0] = time.monotonic()
            d.refresh()
        return ended[0] if ended else None

    # A first start in demo mode queues the demo estate load by itself (app.process); Run now stays disabled
    # while it goes, and the page refreshes when it ends.
    first = _wait(browser, first_run_ended, RUN_TIMEOUT, "the first (demo estate) run to end")
    assert first == "succeeded", f"the demo estate load {first}; page text:\n{_text(browser)[:2000]}"
    button = _wait(browser, run_button, 60, "the Run now button to be enabled")
    before = set(m.group(1) for m in RUN_LABEL.finditer(_text(browser)))
    requested = time.strftime("%H:%M", time.gmtime())
    button.click()

    def finished(d):
        text = _text(d)
        for m in RUN_LABEL.finditer(text):
            if m.group(1) not in before and m.group(3) != "running":
                return m.group(3)
        if "could not start" in text and f"requested at {requested}" in text:
            return "could not start"
        return None

    outcome = _wait(browser, finished, RUN_TIMEOUT, "the manual run to finish")
    browser.save_screenshot(str(SHOTS / "pipeline_after_run.png"))
    assert outcome == "succeeded", f"the Run now run {outcome}; page text:\n{_text(browser)[:2000]}"
    assert "Ask Costlake" in _text(browser)  # the chat page is in the navigation

    for name, title in PAGES:
        _visit(browser, app_url, name, title)
        browser.save_screenshot(str(SHOTS / f"{name}.png"))
    assert len(list(SHOTS.glob("*.png"))) == len(PAGES) + 1
