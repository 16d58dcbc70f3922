"""The demo estate never mixes with real data: removed before the first real file loads, never loaded again, removable on demand."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.mart import demo as mart_demo
from tests.pipeline.services import pipeline_service
from tests.pipeline.test_real_files import FOCUS_COLUMNS, _focus_rows, _mart_totals, _total, _write

pytestmark = pytest.mark.slow
STEPS = ["ingest", "bronze", "silver", "gold", "mart"]


@pytest.fixture
def service(tmp_path, pg_url, kafka_bootstrap):
    service = pipeline_service(tmp_path, pg_url, kafka_bootstrap, demo_mode=True, demo_rows=3_000)
    yield service
    service.close()


def _run(service, **kwargs):
    summary = service.run(steps=kwargs.pop("steps", STEPS), trigger="test", **kwargs)
    assert summary.status == "succeeded", summary.error
    return summary


def _demo_loaded(service) -> bool:
    with service.engine.connect() as conn:
        return mart_demo.demo_loaded(conn)


def _focus_file(tmp_path):
    rows = _focus_rows(60, seed=21)
    path = tmp_path / "our-focus-export.csv"
    _write(path, FOCUS_COLUMNS, rows)
    return path, {"USD": (_total(rows), _total(rows, "EffectiveCost"))}


def test_the_first_real_file_removes_the_demo_and_the_mart_holds_exactly_its_totals(service, tmp_path):
    _run(service)  # default sources in demo mode: the demo estate (and the empty inbox)
    assert _demo_loaded(service) and _mart_totals(service)

    path, totals = _focus_file(tmp_path)
    inbox = service.settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / path.name).write_bytes(path.read_bytes())  # an upload lands in the inbox
    summary = _run(service)  # the scheduled run: default sources again
    detail = summary.steps["ingest"].detail
    assert detail["demo_skipped"] == "real data arrives in this run" and detail["demo_removed"] is True
    assert _mart_totals(service) == totals and not _demo_loaded(service)

    # Later runs never bring the demo back, and the totals stay the file's.
    again = _run(service)
    assert again.steps["ingest"].detail["demo_skipped"] == "real data was delivered"
    assert _mart_totals(service) == totals


def test_remove_demo_data_on_demand_empties_the_mart(service):
    _run(service)
    assert _demo_loaded(service)
    removed = _run(service, steps=["remove_demo"])
    assert removed.steps["remove_demo"].detail["demo_removed"] is True
    assert not _demo_loaded(service) and _mart_totals(service) == {}
    with service.engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT count(*) FROM mart.dim_subscription WHERE subscription_key <> 0")).scalar()
            == 0
        )


def test_an_install_holding_both_keeps_the_real_rows_when_the_demo_is_removed(service, tmp_path):
    path, totals = _focus_file(tmp_path)
    _run(service, sources=["files"], options={"files": [str(path)]})
    # An install from before the rule: the demo loaded beside real data (its cursors hidden for a moment).
    with service.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ops.source_cursors SET source = 'file-hidden' WHERE source = 'file'"))
    _run(service, sources=["demo"])
    with service.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ops.source_cursors SET source = 'file' WHERE source = 'file-hidden'"))
    mixed = _mart_totals(service)
    assert mixed != totals and _demo_loaded(service)

    removed = _run(service, steps=["remove_demo"])
    assert removed.steps["remove_demo"].detail["real_data_kept"] is True
    _run(service, steps=["silver", "gold", "mart"])  # gold and the mart rebuild from the real silver rows
    assert _mart_totals(service) == totals


def test_the_demo_seeds_three_budgets_one_over_one_close_one_fine_and_takes_them_away(service, tmp_path):
    from backend.analytics.budgets import spend
    from backend.mart.budgets_sql import list_budgets, period_bounds

    first = _run(service, steps=[*STEPS, "budgets"])
    seeded = first.steps["budgets"].detail["demo_budgets_seeded"]
    assert len(seeded) == 3 and [n.rsplit("(", 1)[1] for n in seeded] == ["over)", "close)", "fine)"]
    with service.engine.connect() as conn:
        as_of = conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()
        start, _end = period_bounds("monthly", as_of)
        used = {b["name"]: spend(conn, b, start, as_of) / float(b["amount"]) for b in list_budgets(service.engine)}
        alerts = conn.execute(sa.text("SELECT count(*) FROM mart.budget_alerts")).scalar()
    over, close, fine = (used[n] for n in seeded)
    assert over >= 1 > close and fine < 0.5 and alerts > 0
    # A second run seeds nothing more; a user's own budgets are never replaced.
    assert "demo_budgets_seeded" not in _run(service, steps=["budgets"]).steps["budgets"].detail

    path, totals = _focus_file(tmp_path)
    _run(service, sources=["files"], options={"files": [str(path)]})
    assert list_budgets(service.engine) == [] and _mart_totals(service) == totals
