"""Sign-in end to end: the app served as in production (`python -m app.serve`, AUTH_* settings) against a real
OIDC provider, driven in headless Chromium. Each role sees and may do what it should, the backend's audit
names the user, an account on no list is refused, and signing out ends the session."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.config import REPO_ROOT
from backend.mart.db import owner_engine
from tests.auth.conftest import Idp

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1200)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def served(tmp_path_factory, idp: Idp, app_port: int):
    """The app with sign-in configured from AUTH_* settings only (no secrets.toml), on the registered port."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    data_dir = tmp_path_factory.mktemp("auth-app")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "LAKE_URI"):
        env.pop(name, None)  # everything embedded under DATA_DIR
    env.update(
        {
            "APP_ENV": "test",  # not development: the cookie secret's checks apply
            "DATA_DIR": str(data_dir),
            "PYTHONPATH": str(REPO_ROOT),
            "SPARK_DRIVER_MEMORY": "1g",
            # No demo: nothing loads by itself, so the test's clicks are the only writes.
            "DEMO_MODE": "false",
            "AUTH_PROVIDER_METADATA_URL": idp.metadata_url,
            "AUTH_CLIENT_ID": idp.client_id,
            "AUTH_CLIENT_SECRET": idp.client_secret,
            "AUTH_REDIRECT_URI": idp.redirect_uri,
            "AUTH_COOKIE_SECRET": secrets.token_urlsafe(32),
            "AUTH_SCOPES": "openid email profile groups",
            "AUTH_PROMPT": "login",  # oidc-provider knows login and consent, not select_account
            # Roles three ways: a domain, an address and a group claim mapped to a role.
            "AUTH_ROLES_CLAIM": "groups",
            "AUTH_ROLE_MAP": "costlake-admins=admin",
            "AUTH_VIEWERS": "@example.com",
            "AUTH_EDITORS": "editor@example.com",
        }
    )
    log_path = data_dir / "streamlit.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--server.port", str(app_port), "--server.address", "127.0.0.1",
             "--server.headless", "true"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{app_port}"
        try:
            _wait_healthy(proc, url, log_path)
            yield url, data_dir, log_path, env
        finally:
            proc.terminate()  # SIGTERM: the app releases its embedded servers
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}; log: {log_path.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not come up; log: {log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-auth-profile')}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _wait(driver, predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception:  # a page between two renders: look again
            pass
        time.sleep(0.3)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} at {driver.current_url}:\n{_text(driver)[:2000]}"
    )


def _button(driver, label: str):
    from selenium.webdriver.common.by import By

    found = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == label and b.is_displayed()]
    return found[0] if found else None


def _settled(driver) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.TAG_NAME, "h1")) and not driver.find_elements(
        By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'
    )


def _no_exception(driver) -> None:
    from selenium.webdriver.common.by import By

    blocks = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not blocks, f"exception on the page: {blocks[0].text[:1000]}"
    assert "Traceback" not in _text(driver)


def sign_in(driver, url: str, idp: Idp, email: str) -> None:
    """A full authorization-code sign-in: the app's button, the provider's login and consent, the callback."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/")
    driver.delete_all_cookies()  # the app's and the provider's (same host): a new person at the keyboard
    driver.get(f"{url}/")
    _wait(driver, lambda d: _button(d, "Sign in"), "the sign-in screen").click()
    login = _wait(driver, lambda d: d.find_element(By.NAME, "login"), "the provider's login form")
    assert driver.current_url.startswith(idp.issuer)
    login.send_keys(email)
    driver.find_element(By.NAME, "password").send_keys("any password")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def back_or_consent(d):
        if d.current_url.startswith(url) and "/oauth2callback" not in d.current_url:
            return "app"
        consent = [b for b in d.find_elements(By.CSS_SELECTOR, "button[type=submit]") if b.text == "Continue"]
        if consent:
            consent[0].click()
        return None

    _wait(driver, back_or_consent, "the provider to send the browser back to the app")
    _wait(driver, _settled, "the app's first page")


def _visit(driver, url: str, path: str, title: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/{path}")
    _wait(driver, lambda d: _settled(d) and title in [h.text for h in d.find_elements(By.TAG_NAME, "h1")], title)
    time.sleep(1.0)
    _no_exception(driver)


def _tab(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    tab = _wait(driver, lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, '[role="tab"]') if t.text == label],
                f"tab {label}")[0]  # fmt: skip
    tab.click()


def _audit(data_dir: Path) -> list[tuple]:
    """ops.user_audit of the served app, through the address its embedded Postgres registered."""
    from backend.runtime.registry import ServiceRegistry

    record = ServiceRegistry(data_dir / "run").read("postgres")
    engine = owner_engine(record.address, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT who, role, action, target, outcome FROM ops.user_audit ORDER BY 1"))
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def test_the_app_refuses_a_signed_in_user_on_no_list(served, browser, idp):
    url, *_ = served
    sign_in(browser, url, idp, "outsider@elsewhere.test")
    # Streamlit paints the title before the warning beneath it: wait for the whole refusal, not its first line.
    text = _wait(browser, lambda d: "AUTH_VIEWERS" in _text(d) and _text(d), "the refusal page")
    assert "No access to Costlake" in text and "outsider@elsewhere.test" in text
    # No page is reachable by URL either: the gate runs before the navigation.
    _visit(browser, url, "budgets", "No access to Costlake")
    assert "Create / edit" not in _text(browser)


def test_a_viewer_reads_every_page_but_cannot_run_or_change_anything(served, browser, idp):
    url, data_dir, *_ = served
    sign_in(browser, url, idp, "viewer@example.com")
    _wait(browser, lambda d: "Signed in as viewer@example.com · viewer" in _text(d), "the viewer's sidebar")
    _visit(browser, url, "pipeline", "Pipeline")
    run = _wait(browser, lambda d: _button(d, "▶ Run now"), "the Run now button")
    assert not run.is_enabled(), "a viewer must not be able to press Run now"
    _wait(browser, lambda d: "Running the pipeline needs the admin role; you are viewer" in _text(d), "the role notice")
    _visit(browser, url, "budgets", "Budgets")
    _tab(browser, "Create / edit")
    create = _wait(browser, lambda d: _button(d, "Create budget"), "the budget form")
    assert not create.is_enabled()
    _visit(browser, url, "sources", "Sources & settings")
    text = _text(browser)
    assert "You are viewer@example.com, role viewer" in text and "Effective settings" not in text
    assert _audit(data_dir) == []  # nothing was written


def test_an_editor_creates_a_budget_and_the_audit_names_them(served, browser, idp):
    from selenium.webdriver.common.by import By

    url, data_dir, *_ = served
    sign_in(browser, url, idp, "editor@example.com")
    _visit(browser, url, "budgets", "Budgets")
    _tab(browser, "Create / edit")
    name = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Name"]'), "the Name field")
    name.send_keys("E2E team budget")
    amount = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Amount"]')
    amount.clear()
    amount.send_keys("1234")
    _button(browser, "Create budget").click()
    _wait(browser, lambda d: "Budget 'E2E team budget' created." in _text(d), "the budget to be created")
    _no_exception(browser)
    # Editors still may not run the pipeline.
    _visit(browser, url, "pipeline", "Pipeline")
    assert not _wait(browser, lambda d: _button(d, "▶ Run now"), "the Run now button").is_enabled()
    created = [row for row in _audit(data_dir) if row[2] == "budget.create"]
    assert [(who, role, outcome) for who, role, _, _, outcome in created] == [("editor@example.com", "editor", "done")]


def test_an_admin_edits_a_schedule_and_it_is_audited(served, browser, idp):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, data_dir, *_ = served
    # The admin role comes from the groups claim (costlake-admins), over the @example.com viewer entry.
    sign_in(browser, url, idp, "admin@example.com")
    _wait(browser, lambda d: "Signed in as admin@example.com · admin" in _text(d), "the admin's sidebar")
    _visit(browser, url, "pipeline", "Pipeline")
    assert _wait(browser, lambda d: _button(d, "▶ Run now"), "the Run now button").is_enabled()
    _tab(browser, "Schedules")
    expander = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stExpander"] summary')
                                         if e.is_displayed() and "Edit schedule" in e.text], "a schedule")[0]  # fmt: skip
    expander.click()
    every = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, 'input[aria-label="Every (interval)"]')
                                      if e.is_displayed()], "the interval field")[0]  # fmt: skip
    every.send_keys(Keys.CONTROL, "a")
    every.send_keys("45")
    _wait(browser, lambda d: _button(d, "Save schedule"), "Save schedule").click()
    _wait(browser, lambda d: "Saved: interval[0:45:00]" in _text(d), "the schedule to be saved")
    edits = [row for row in _audit(data_dir) if row[2] == "schedule.edit"]
    assert edits and edits[0][:2] == ("admin@example.com", "admin") and edits[0][4] == "done"
    # Admins see the audit and the effective settings; the cookie and client secrets stay masked.
    _visit(browser, url, "sources", "Sources & settings")
    text = _text(browser)
    assert "Audit: who changed what" in text and "Effective settings" in text
    assert idp.client_secret not in browser.page_source


def test_sign_out_ends_the_session(served, browser, idp):
    url, *_ = served
    sign_in(browser, url, idp, "viewer@example.com")
    _wait(browser, lambda d: _button(d, "Sign out"), "the Sign out button").click()

    def signed_out(d):
        # Streamlit sends the browser to the provider's end_session endpoint, which asks to confirm.
        confirm = _button(d, "Yes, sign me out")
        if confirm is not None:
            confirm.click()
        return d.current_url.startswith(url) and _button(d, "Sign in") is not None

    _wait(browser, signed_out, "the sign-in screen after signing out")
    # The login cookie is gone: a page opened by URL shows the sign-in screen, not the page.
    browser.get(f"{url}/pipeline")
    _wait(browser, lambda d: _button(d, "Sign in"), "the sign-in screen")
    assert "Run now" not in _text(browser)
