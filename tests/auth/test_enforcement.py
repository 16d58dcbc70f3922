"""Every write checks the role in the backend and is audited with the user: budgets, anomaly feedback,
schedules, runs; refused attempts change nothing. Also the audit table's migration and its privacy."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from alembic import command

from backend.analytics import budgets
from backend.auth import SCHEDULER, PermissionDenied, Role
from backend.mart import analytics, budgets_sql
from backend.mart.audit import recent
from backend.mart.db import owner_engine
from backend.mart.migrate import alembic_config, upgrade
from backend.pipeline.launcher import RunLauncher
from backend.pipeline.service import PipelineService, run_role
from scheduler.service import start_scheduler
from tests.auth.principals import ADMIN, EDITOR, VIEWER

BUDGET = {"name": "team", "scope_type": "total", "amount": 100, "currency": "EUR", "period": "monthly"}


@pytest.fixture
def owner(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_budget_writes_need_the_editor_role_and_are_audited_with_the_user(owner):
    with pytest.raises(PermissionDenied, match="Creating a budget needs the editor role; you are viewer"):
        budgets.create_budget(owner, actor=VIEWER, **BUDGET)
    assert _count(owner, "mart.budgets") == 0

    bid = budgets.create_budget(owner, actor=EDITOR, webhook_url="https://hooks.example.com/T0K3N", **BUDGET)
    with pytest.raises(PermissionDenied, match="Changing a budget needs the editor role"):
        budgets.update_budget(owner, bid, actor=VIEWER, amount=1)
    budgets.update_budget(owner, bid, actor=ADMIN, amount=250)
    with pytest.raises(PermissionDenied, match="Deleting a budget needs the editor role"):
        budgets.delete_budget(owner, bid, actor=VIEWER)
    assert budgets_sql.get_budget(owner, bid)["amount"] == 250
    budgets.delete_budget(owner, bid, actor=EDITOR)
    assert budgets_sql.get_budget(owner, bid) is None

    entries = recent(owner)
    assert [(e.who, e.role, e.action, e.target) for e in entries] == [
        ("editor@example.com", "editor", "budget.delete", f"budget {bid}"),
        ("admin@example.com", "admin", "budget.update", f"budget {bid}"),
        ("editor@example.com", "editor", "budget.create", f"budget {bid}"),
    ]
    created = entries[-1].detail
    assert created["name"] == "team" and created["webhook_url"] == "(set)"  # never the URL: it holds a token
    assert "T0K3N" not in str([e.detail for e in entries])
    assert entries[1].detail == {"amount": 250}


def test_anomaly_feedback_needs_the_editor_role_and_records_who_gave_it(owner):
    with owner.begin() as conn:
        anomaly_id = conn.execute(
            sa.text(
                "INSERT INTO mart.anomalies (level, dimension_value, metric, charge_date, expected, lower_bound,"
                " upper_bound, actual, impact, currency, severity, kind, method, contributors) VALUES ('service',"
                " 'Storage', 'actual', :d, 100, 80, 120, 400, 300, 'EUR', 7.5, 'spike', 'robust_z', '[]')"
                " RETURNING anomaly_id"
            ),
            {"d": dt.date(2026, 11, 20)},
        ).scalar_one()
    with pytest.raises(PermissionDenied, match="Giving anomaly feedback needs the editor role; you are viewer"):
        analytics.set_anomaly_status(owner, anomaly_id, actor=VIEWER, verdict="expected")
    assert _count(owner, "mart.anomaly_feedback") == 0
    analytics.set_anomaly_status(owner, anomaly_id, actor=EDITOR, verdict="expected", note="load test", suppress_days=3)
    with owner.connect() as conn:
        assert conn.execute(sa.text("SELECT created_by FROM mart.anomaly_feedback")).scalar_one() == EDITOR.email
    (entry,) = recent(owner)
    assert (entry.who, entry.action, entry.target) == (EDITOR.email, "anomaly.feedback", f"anomaly {anomaly_id}")
    assert entry.detail == {"verdict": "expected", "note": "load test", "suppress_days": 3}


def test_schedule_edits_need_the_admin_role_and_are_audited(owner):
    scheduler = start_scheduler(owner, runner=lambda **kw: None, paused=True)
    try:
        before = {j.job_id: j.trigger for j in scheduler.list()}
        for call in (
            lambda who: scheduler.reschedule("pipeline-hourly", kind="interval", args={"minutes": 5}, actor=who),
            lambda who: scheduler.pause("inbox-scan", actor=who),
        ):
            for who in (VIEWER, EDITOR):
                with pytest.raises(PermissionDenied, match=f"needs the admin role; you are {who.role.name}"):
                    call(who)
        assert {j.job_id: j.trigger for j in scheduler.list()} == before
        assert not any(j.paused for j in scheduler.list())
        assert recent(owner) == []

        info = scheduler.reschedule("pipeline-hourly", kind="interval", args={"minutes": 5}, actor=ADMIN)
        assert "0:05:00" in info.trigger
        scheduler.pause("inbox-scan", actor=ADMIN)
        entries = recent(owner)
        assert [(e.who, e.action, e.target) for e in entries] == [
            (ADMIN.email, "schedule.pause", "inbox-scan"),
            (ADMIN.email, "schedule.edit", "pipeline-hourly"),
        ]
        assert entries[1].detail == {"before": before["pipeline-hourly"], "after": info.trigger}
    finally:
        scheduler.shutdown(wait=False)


class _Summary:
    run_id, status, error = "run-1", "succeeded", None


class _Pipeline:
    """The launcher's collaborator: the real audit engine, a run that remembers who asked."""

    def __init__(self, engine) -> None:
        self.engine, self.calls = engine, []

    def run(self, **kwargs):
        self.calls.append(kwargs)
        return _Summary()


def test_run_now_from_the_app_needs_an_admin_but_an_editor_may_import_the_inbox(owner):
    pipeline = _Pipeline(owner)
    launcher = RunLauncher(pipeline)
    with pytest.raises(PermissionDenied, match="Running the pipeline needs the admin role; you are viewer"):
        launcher.start(actor=VIEWER)
    with pytest.raises(PermissionDenied, match="Running the pipeline needs the admin role; you are editor"):
        launcher.start(actor=EDITOR, steps=["mart"])
    with pytest.raises(PermissionDenied, match="Removing the demo data needs the admin role; you are editor"):
        launcher.start(actor=EDITOR, steps=["remove_demo"])
    with pytest.raises(PermissionDenied, match="Importing the inbox needs the editor role; you are viewer"):
        launcher.start(actor=VIEWER, options={"sources": ["inbox"]})
    assert launcher.current is None and pipeline.calls == []

    launcher.start(actor=EDITOR, options={"sources": ["inbox"]})
    launch = launcher.wait(timeout=30)
    assert launch.status == "succeeded"
    assert pipeline.calls[0]["actor"] is EDITOR and pipeline.calls[0]["options"] == {"sources": ["inbox"]}
    (entry,) = recent(owner)
    assert (entry.who, entry.action, entry.detail) == (EDITOR.email, "run.start", {"options": {"sources": ["inbox"]}})


def test_the_pipeline_service_checks_the_role_before_it_touches_anything():
    # No runtime at all: the refusal must come first, so nothing of a run can start.
    service = PipelineService.__new__(PipelineService)
    with pytest.raises(PermissionDenied, match="Running the pipeline needs the admin role; you are editor"):
        service.run(steps=["ingest"], sources=["demo"], actor=EDITOR)
    assert run_role(steps=None, sources=["inbox"]) == (Role.editor, "Importing the inbox")
    assert run_role(steps=None, sources=["azure", "inbox"])[0] is Role.admin
    assert SCHEDULER.can(Role.admin)  # the scheduler's jobs and the CLI run as the system


def test_the_audit_table_migrates_both_ways_and_the_reader_cannot_see_it(owner, pg_url, tmp_path):
    from backend.mart.db import ensure_reader_role, reader_engine
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, database_url=pg_url)
    ensure_reader_role(settings, owner_url=pg_url)
    reader = reader_engine(settings, owner_url=pg_url)
    try:
        with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT * FROM ops.user_audit"))
    finally:
        reader.dispose()
    command.downgrade(alembic_config(pg_url), "0015_notifications")
    with owner.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('ops.user_audit')")).scalar() is None
    upgrade(pg_url)
    budgets.create_budget(owner, actor=EDITOR, **BUDGET)
    assert [e.action for e in recent(owner)] == ["budget.create"]
    assert recent(owner, who="nobody@example.com") == []
    assert recent(owner)[0].at.timestamp() <= time.time() + 5


def test_reconcile_now_from_the_pipeline_page_is_an_admins(owner):
    from app.run_history import reconcile_now

    for who in (VIEWER, EDITOR):
        with pytest.raises(
            PermissionDenied, match=f"Reconciling the mart needs the admin role; you are {who.role.name}"
        ):
            reconcile_now(owner, None, actor=who)  # refused before the lake is even looked at
    assert _count(owner, "mart.reconciliation_checks") == 0 and recent(owner) == []
