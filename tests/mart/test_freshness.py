"""Freshness per source on a real migrated mart: grouping, ages, expectations, the demo and the mart's own lag."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from backend.mart.freshness import SourceFreshness, source_freshness
from tests.conftest import make_settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SUB_A = "11111111-1111-1111-1111-111111111111"
SUB_B = "22222222-2222-2222-2222-222222222222"
AZURE = {"azure_tenant_id": "t", "azure_client_id": "c", "azure_client_secret": "s"}


def put_cursor(owner: sa.Engine, source: str, scope: str, day: date, fetched: datetime, metric: str = "ActualCost"):
    with owner.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at) "
                "VALUES (:s, :sc, :m, :d, 'b', :f)"
            ),
            {"s": source, "sc": scope, "m": metric, "d": day, "f": fetched},
        )


def put_mart_day(owner: sa.Engine, day: date, loaded_at: datetime) -> None:
    """One agg_cost_daily row (every key the "(none)" member) and a succeeded load."""
    with owner.begin() as conn:
        cols = conn.execute(
            sa.text(
                "SELECT column_name, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'mart' AND table_name = 'agg_cost_daily'"
            )
        ).all()
        names = [c for c, nullable in cols if nullable == "NO"]
        values = [":day" if c == "charge_date" else "0" for c in names]
        conn.execute(
            sa.text(f"INSERT INTO mart.agg_cost_daily ({', '.join(names)}) VALUES ({', '.join(values)})"), {"day": day}
        )
        conn.execute(
            sa.text("INSERT INTO mart.load_history (status, started_at, finished_at) VALUES ('succeeded', :t, :t)"),
            {"t": loaded_at},
        )


def put_run(owner: sa.Engine, started: datetime) -> None:
    with owner.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.pipeline_runs (run_id, trigger, steps, status, started_at) "
                "VALUES ('r1', 'manual', '[]', 'succeeded', :t)"
            ),
            {"t": started},
        )


def by_source(entries: list[SourceFreshness]) -> dict[str, SourceFreshness]:
    return {e.source: e for e in entries}


def test_nothing_delivered_nothing_expected(tmp_path, reader):
    assert source_freshness(reader, make_settings(tmp_path), now=NOW) == []


def test_azure_per_subscription_files_and_mart(tmp_path, owner, reader):
    settings = make_settings(tmp_path, azure_subscription_ids=[SUB_A, SUB_B], **AZURE)
    # A: yesterday-but-one (Azure's usual lag) -> fresh; B: stopped 5 days ago -> stale.
    put_cursor(owner, "azure", SUB_A, date(2026, 11, 30), NOW - timedelta(hours=1))
    put_cursor(owner, "azure", SUB_A, date(2026, 11, 29), NOW - timedelta(hours=1), metric="AmortizedCost")
    put_cursor(owner, "azure", SUB_B, date(2026, 11, 27), NOW - timedelta(hours=1))
    put_cursor(owner, "azure", "33333333-0000-0000-0000-000000000000", date(2026, 1, 1), NOW)  # not configured
    put_cursor(owner, "file", "/subscriptions/x", date(2026, 11, 20), NOW - timedelta(days=3))
    put_cursor(owner, "file", "/subscriptions/y", date(2026, 11, 25), NOW - timedelta(days=3))
    put_mart_day(owner, date(2026, 11, 30), NOW - timedelta(hours=1))

    got = by_source(source_freshness(reader, settings, now=NOW))
    assert list(got) == [f"azure:{SUB_A}", f"azure:{SUB_B}", "file", "mart"]
    a, b, files, mart = got.values()
    assert (a.last_charge_day, a.age_hours, a.expected_hours, a.stale) == (date(2026, 11, 30), 36.0, 72.0, False)
    assert a.last_loaded_at == NOW - timedelta(hours=1)
    assert (b.last_charge_day, b.age_hours, b.stale) == (date(2026, 11, 27), 108.0, True)
    assert f"Azure subscription {SUB_B}" in b.detail and "expected within 72 h" in b.detail
    # Files: the newest day over every file; 156 h old, within the 192 h file expectation.
    assert (files.last_charge_day, files.age_hours, files.expected_hours, files.stale) == (
        date(2026, 11, 25),
        156.0,
        192.0,
        False,
    )
    assert not mart.stale and mart.last_charge_day == date(2026, 11, 30)

    tight = settings.model_copy(update={"stale_after_hours_file": 100.0, "stale_after_hours": 0.0})
    got = by_source(source_freshness(reader, tight, now=NOW))
    assert got["file"].stale and not got[f"azure:{SUB_B}"].stale  # 0 = never stale
    assert "never counted as stale" in got[f"azure:{SUB_B}"].detail


def test_mart_behind_delivered_days_is_stale(tmp_path, owner, reader):
    settings = make_settings(tmp_path, azure_subscription_ids=[SUB_A], **AZURE)
    put_cursor(owner, "azure", SUB_A, date(2026, 12, 1), NOW - timedelta(hours=1))
    put_mart_day(owner, date(2026, 11, 20), NOW - timedelta(hours=100))
    mart = by_source(source_freshness(reader, settings, now=NOW))["mart"]
    assert mart.stale and mart.last_charge_day == date(2026, 11, 20)
    assert "sources delivered 2026-12-01" in mart.detail and "100 h ago" in mart.detail


def test_demo_is_never_stale(tmp_path, owner, reader):
    # No Azure credentials: "azure" cursors come from the demo tenant, like "synthetic" ones.
    put_cursor(owner, "synthetic", "sub-1", date(2025, 1, 31), NOW - timedelta(days=400))
    put_cursor(owner, "azure", SUB_A, date(2025, 2, 1), NOW - timedelta(days=400))
    got = source_freshness(reader, make_settings(tmp_path), now=NOW)
    assert [(e.source, e.stale, e.last_charge_day) for e in got] == [("demo", False, date(2025, 2, 1))]
    assert "never stale" in got[0].detail


def test_configured_subscription_that_never_delivered(tmp_path, owner, reader):
    settings = make_settings(tmp_path, azure_subscription_ids=[SUB_A], **AZURE)
    (entry,) = source_freshness(reader, settings, now=NOW)
    assert (entry.source, entry.last_charge_day, entry.stale) == (f"azure:{SUB_A}", None, False)  # no run yet
    put_run(owner, NOW - timedelta(hours=80))
    (entry,) = source_freshness(reader, settings, now=NOW)
    assert entry.stale and "after 80 h of pipeline runs" in entry.detail


def test_what_to_do_names_the_next_step():
    from backend.mart.freshness import what_to_do

    def entry(source: str) -> SourceFreshness:
        return SourceFreshness(source, None, None, None, 72.0, True, "")

    assert "Azure credential check" in what_to_do(entry(f"azure:{SUB_A}"))
    assert "upload it" in what_to_do(entry("file"))
    assert "failed run" in what_to_do(entry("mart"))
