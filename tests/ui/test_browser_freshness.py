"""Stale data is a warning on every page: headless (AppTest, each page) and in real Chromium against `app.serve`.

The mart holds real (not demo) data whose newest charge day is ten days old, delivered by imported files,
and the file expectation is one day: every page must say so, name the source and what to do, and the app's
own metrics endpoint (started by `app.serve` with METRICS_PORT) must report the same source as stale."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from backend.config import REPO_ROOT
from backend.mart.db import owner_engine
from tests.ui.conftest import page, texts
from tests.ui.test_browser import (
    PAGES,
    _free_port,
    _needs_chromium,
    _settled,
    _stop,
    _text,
    _wait,
    _wait_healthy,
    browser,  # noqa: F401 - the shared headless Chromium fixture
    page_problems,
)

WARNING = "Stale data."
FILES = "Imported files"
OLD_DAYS = 10


def seed_stale_files(engine: sa.Engine, lake) -> dt.date:
    """Forty days of cost through the mart loader, ending OLD_DAYS ago, delivered by an imported file."""
    from backend.mart.load import load_gold
    from tests.mart.synthetic_gold import gold_cost_daily, write_gold

    as_of = dt.date.today() - dt.timedelta(days=OLD_DAYS)
    write_gold(lake, gold_cost_daily(start=as_of - dt.timedelta(days=39), days=40, rows_per_day=30), run_id="seed")
    load_gold(engine, lake, run_id="seed")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at) "
                "VALUES ('file', '/subscriptions/00000000-0000-0000-0000-000000000001', 'ActualCost', :d, 'f1', now())"
            ),
            {"d": as_of},
        )
    return as_of


# --- headless: every page, in one process ---------------------------------------------------------------
@pytest.fixture
def stale_ui(ui_settings):
    """The tests/ui settings with real (non-demo) data expected and a one-day file expectation."""
    return ui_settings.model_copy(update={"demo_mode": False, "stale_after_hours_file": 24.0})


@pytest.fixture
def stale_pipeline(stale_ui, monkeypatch):
    import streamlit as st

    import app.context
    import app.process

    server = app.process.build(stale_ui, spark=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setattr(app.context, "get_server", lambda: server)
    pipeline = app.context.get_pipeline()
    assert pipeline.settings.stale_after_hours_file == 24.0
    yield pipeline
    st.cache_resource.clear()
    st.cache_data.clear()
    server.resources.close()


@pytest.mark.parametrize("name", [name for name, _ in PAGES])
def test_every_page_warns_about_stale_files(stale_pipeline, name):
    as_of = seed_stale_files(stale_pipeline.engine, stale_pipeline.lake)
    at = page(name)
    at.run()
    assert not at.exception, at.exception
    warnings = [str(w.value) for w in at.warning]
    stale = [w for w in warnings if WARNING in w]
    assert len(stale) == 1, f"{name}: {warnings}\n{texts(at)}"
    assert f"Data as of **{as_of.isoformat()}**" in stale[0]
    # The 24 h expectation itself is checked end to end by the Chromium test below, against its own server:
    # in one long pytest process another test's settings can reach the headless pages' expectation.
    assert FILES in stale[0] and re.search(r"expected within \d+ h", stale[0]) and "upload it" in stale[0], stale[0]


def test_fresh_data_is_a_caption_not_a_warning(stale_pipeline):
    import streamlit as st

    seed_stale_files(stale_pipeline.engine, stale_pipeline.lake)
    with stale_pipeline.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ops.source_cursors SET day = current_date - 1"))
    st.cache_data.clear()
    at = page("budgets")
    at.run()
    assert not at.exception
    assert not [w for w in at.warning if WARNING in str(w.value)]
    assert any("Data as of" in str(c.value) for c in at.caption)


# --- real browser: `python -m app.serve` on the seeded mart ----------------------------------------------
@pytest.fixture
def stale_app(tmp_path: Path, pg_url: str, kafka_bootstrap: str):
    """The app as `make run` starts it, on a migrated and seeded mart, metrics on; no scheduler, so the data stays old."""
    _needs_chromium()
    from backend.lake import lake_from_settings
    from backend.mart.migrate import upgrade
    from tests.conftest import make_settings

    upgrade(pg_url)
    settings = make_settings(tmp_path, database_url=pg_url, lake_uri=str(tmp_path / "lake"))
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    as_of = seed_stale_files(engine, lake_from_settings(settings))
    engine.dispose()

    port, metrics_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": pg_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LAKE_URI": str(tmp_path / "lake"),
        "DEMO_MODE": "false",
        "SCHEDULER_ENABLED": "false",
        "STALE_AFTER_HOURS_FILE": "24",
        "METRICS_PORT": str(metrics_port),
        "SPARK_DRIVER_MEMORY": "1g",
    }
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.headless", "true"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, url, log_path)
            yield url, f"http://127.0.0.1:{metrics_port}/metrics", as_of
        finally:
            _stop(proc)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chromium_sees_the_stale_data_warning_on_every_page(stale_app, browser):  # noqa: F811 - fixture
    from selenium.webdriver.common.by import By

    url, metrics_url, as_of = stale_app
    for name, title in PAGES:
        browser.get(f"{url}/{name}")
        _wait(browser, lambda d, t=title: _settled(d, t), 180, f"page {name}")

        def warning(d):
            alerts = d.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentWarning"]')
            return next((a.text for a in alerts if WARNING in a.text), None)

        text = _wait(browser, warning, 60, f"the stale-data warning on {name}")
        assert FILES in text and as_of.isoformat() in text and "expected within 24 h" in text, text
        assert "upload it on Sources & settings" in text, text
        problems = page_problems(browser)
        assert not problems, f"page {name} is not healthy: {problems}; page text:\n{_text(browser)[:2000]}"

    # The app's own metrics endpoint, started with its pipeline, reports the same source as stale.
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        body = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("costlake_source_stale", (("source", "file"),))] == 1
    assert samples[("costlake_source_expected_hours", (("source", "file"),))] == 24
