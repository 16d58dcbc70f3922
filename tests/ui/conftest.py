"""Fixtures for page tests: a real runtime (test Postgres, Tansu, local lake) patched into app.context, and a
seeded mart (synthetic gold through the mart loader, plus direct inserts into the analytics tables)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.config import REPO_ROOT
from backend.mart.run_records import StepResult
from tests.conftest import make_settings

PAGES = REPO_ROOT / "pages"
TIMEOUT = 60


@pytest.fixture
def ui_settings(tmp_path: Path, pg_url: str, kafka_bootstrap: str):
    return make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        lake_uri=str(tmp_path / "lake"),
        scheduler_enabled=False,
        demo_mode=True,
    )


@pytest.fixture
def app_server(ui_settings, monkeypatch) -> Iterator:
    """The Server the pages get from app.context.get_server(), built as app.process builds it (no Spark)."""
    import streamlit as st

    import app.context
    import app.process

    server = app.process.build(ui_settings, spark=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setattr(app.context, "get_server", lambda: server)
    yield server
    server.launcher.wait(timeout=30)
    st.cache_resource.clear()
    st.cache_data.clear()
    server.resources.close()


@pytest.fixture
def app_runtime(app_server):
    return app_server.resources.runtime


@pytest.fixture
def pipeline(app_runtime):
    import app.context

    return app.context.get_pipeline()


@pytest.fixture
def seeded(pipeline) -> dict:
    """60 days of synthetic cost ending yesterday, loaded through the mart loader; anomalies and a budget."""
    from backend.mart.load import load_gold
    from tests.mart.synthetic_gold import gold_cost_daily, write_gold

    as_of = dt.date.today() - dt.timedelta(days=1)
    start = as_of - dt.timedelta(days=59)
    daily = gold_cost_daily(start=start, days=60, rows_per_day=60, resources=60, seed=3)
    write_gold(pipeline.lake, daily, run_id="seed")
    load_gold(pipeline.engine, pipeline.lake, run_id="seed")
    with pipeline.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mart.anomalies (level, dimension_value, metric, charge_date, expected, lower_bound,"
                " upper_bound, actual, impact, currency, severity, kind, method, contributors) VALUES"
                " ('service', 'Storage', 'actual', :d, 100, 80, 120, 400, 300, 'EUR', 7.5, 'spike', 'robust_z',"
                " CAST(:c AS jsonb)),"
                " ('total', '', 'actual', :d2, 5000, 4500, 5500, 3000, -2000, 'EUR', 4.0, 'drop', 'robust_z', '[]')"
            ),
            {
                "d": as_of - dt.timedelta(days=3),
                "d2": as_of - dt.timedelta(days=10),
                "c": json.dumps(
                    [{"dimension": "resource", "value": "r7", "expected": 10, "actual": 300, "delta": 290}]
                ),
            },
        )
        conn.execute(
            sa.text(
                "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period)"
                " VALUES ('Platform', 'total', '', 50000, 'EUR', 'monthly')"
            )
        )
        # What the analytics step writes for the month-end card: a total with its own interval.
        month_start = as_of.replace(day=1)
        month_end = (month_start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        conn.execute(
            sa.text(
                "INSERT INTO mart.forecast_totals (scope_type, scope_value, metric, period, period_start, period_end,"
                " actual_to_date, point, lower_bound, upper_bound, interval_level, currency, method, as_of)"
                " VALUES ('total', '', 'actual', 'month_end', :s, :e, 1000, 43210, 41000, 45500, 0.8, 'EUR',"
                " 'seasonal_median', :a)"
            ),
            {"s": month_start, "e": month_end, "a": as_of},
        )
    return {"as_of": as_of, "start": start}


# Step details shaped like the real ingest and bronze steps record them (backend.pipeline.steps).
DETAILS = {
    "ingest": {
        "batches": [{"source": "demo", "batch": "run-demo-1", "chunks": 4}],
        "inbox": [{"file": "focus.csv", "status": "imported", "detail": "FOCUS 1.0-1.3; 1 rows"}],
    },
    "bronze": {
        "bronze_rows": 12,
        "dead_letters": 2,
        "skipped_replays": 0,
        "committed_batches": ["run-demo-1"],
        "batches_not_in_bronze": ["file-abc"],
    },
}


def _step(name: str):
    def run(ctx) -> StepResult:
        return StepResult(rows_in=1, rows_out=1, detail=DETAILS.get(name, {"step": name}))

    return run


@pytest.fixture
def quick_steps(monkeypatch) -> tuple[str, ...]:
    """A tiny step registry so "run now" exercises the real runner and run recording in a second, not Spark."""
    steps = ("ingest", "bronze", "mart")
    module = types.ModuleType("backend.pipeline.steps")
    module.ALL_STEPS = steps
    module.REGISTRY = {s: _step(s) for s in steps}
    monkeypatch.setitem(sys.modules, "backend.pipeline.steps", module)
    return steps


def page(name: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)


def texts(at) -> str:
    """Everything the page wrote, for loose assertions."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "error", "success", "warning"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)
