"""The gold -> mart load: exact totals, idempotent reloads with stable keys, and atomicity under failure and kill."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from backend.lake.delta import lake_from_settings
from backend.mart import load as mart_load
from backend.mart.load import LoadError, load_gold, mark_abandoned_loads
from backend.mart.model import DIMENSIONS
from tests.mart import synthetic_gold

START = dt.date(2026, 1, 25)  # 14 days across two months


@pytest.fixture
def lake(mart_settings):
    return lake_from_settings(mart_settings)


@pytest.fixture
def gold(lake):
    daily = synthetic_gold.gold_cost_daily(start=START, days=14, rows_per_day=60, resources=80)
    synthetic_gold.write_gold(lake, daily)
    return daily


def _gold_total(daily: pa.Table, column: str = "actual_cost") -> Decimal:
    return pc.sum(daily[column]).as_py()


def _snapshot(engine: sa.Engine) -> dict:
    """Everything a reader could notice: keys of every dimension, fact and aggregate totals."""
    with engine.connect() as conn:
        dims = {
            d.table: conn.execute(
                sa.text(f"SELECT {d.key}, {', '.join(d.natural_columns)} FROM mart.{d.table} ORDER BY 1")
            ).all()
            for d in DIMENSIONS
        }
        return {
            "dims": dims,
            "fact": conn.execute(
                sa.text(
                    "SELECT charge_date, count(*), sum(actual_cost), sum(amortized_cost) FROM mart.fact_cost_daily "
                    "GROUP BY 1 ORDER BY 1"
                )
            ).all(),
            "agg": conn.execute(
                sa.text("SELECT count(*), sum(actual_cost), sum(amortized_cost) FROM mart.agg_cost_daily")
            ).one(),
            "monthly": conn.execute(
                sa.text("SELECT charge_month, sum(actual_cost) FROM mart.agg_cost_monthly GROUP BY 1 ORDER BY 1")
            ).all(),
            "resource_monthly": conn.execute(
                sa.text(
                    "SELECT charge_month, count(*), sum(actual_cost), sum(fact_rows) FROM mart.agg_cost_resource_monthly "
                    "GROUP BY 1 ORDER BY 1"
                )
            ).all(),
            "tags": conn.execute(sa.text("SELECT count(*), sum(actual_cost) FROM mart.agg_cost_by_tag")).one(),
            "bridge": conn.execute(sa.text("SELECT count(*) FROM mart.bridge_resource_tag")).scalar(),
        }


def test_load_is_exact(mart_settings, lake, gold, owner):
    stats = load_gold(mart_settings, lake, run_id="r1")
    assert stats.months == ["2026-01", "2026-02"]
    assert stats.rows_loaded == gold.num_rows
    snap = _snapshot(owner)
    assert sum(n for _, n, _, _ in snap["fact"]) == gold.num_rows
    assert sum(a for _, _, a, _ in snap["fact"]) == _gold_total(gold)
    assert snap["agg"][1] == _gold_total(gold) and snap["agg"][2] == _gold_total(gold, "amortized_cost")
    assert sum(t for _, t in snap["monthly"]) == _gold_total(gold)
    # Every tag key partitions the whole cost (untagged included).
    assert snap["tags"][1] == 2 * _gold_total(gold)
    with owner.connect() as conn:
        none_service = conn.execute(
            sa.text(
                "SELECT sum(f.actual_cost) FROM mart.fact_cost_daily f JOIN mart.dim_service s USING (service_key) "
                "WHERE s.label = '(none)'"
            )
        ).scalar()
        history = conn.execute(sa.text("SELECT status, rows_loaded, run_id FROM mart.load_history")).all()
        partitions = conn.execute(
            sa.text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'mart.fact_cost_daily'::regclass")
        ).scalar()
    empty_service = pc.equal(gold["service_name"], "")
    assert none_service == pc.sum(pc.filter(gold["actual_cost"], empty_service)).as_py() > 0
    assert history == [("succeeded", gold.num_rows, "r1")]
    assert partitions == 2


def test_reload_is_idempotent(mart_settings, lake, gold, owner):
    load_gold(mart_settings, lake, run_id="r1")
    before = _snapshot(owner)
    stats = load_gold(mart_settings, lake, run_id="r2")
    assert _snapshot(owner) == before
    assert stats.rows_replaced == gold.num_rows
    assert set(stats.dims_added.values()) == {0}


def test_reloading_one_month_keeps_keys_and_other_months(mart_settings, lake, gold, owner):
    load_gold(mart_settings, lake, run_id="r1")
    before = _snapshot(owner)
    # February is re-rated, and a new resource appears in it.
    feb = synthetic_gold.gold_cost_daily(start=dt.date(2026, 2, 1), days=7, rows_per_day=60, resources=90, seed=7)
    synthetic_gold.write_gold(lake, feb, tags=False)
    stats = load_gold(mart_settings, lake, run_id="r2", months=["2026-02"])
    after = _snapshot(owner)
    assert stats.months == ["2026-02"]
    for table, rows in before["dims"].items():
        assert after["dims"][table][: len(rows)] == rows, table  # existing keys never move
    assert len(after["dims"]["dim_resource"]) > len(before["dims"]["dim_resource"])
    jan_before = [r for r in before["fact"] if r[0].month == 1]
    assert [r for r in after["fact"] if r[0].month == 1] == jan_before
    feb_total = sum(t for d, _, t, _ in after["fact"] if d.month == 2)
    assert feb_total == _gold_total(feb)
    assert after["monthly"][1][1] == _gold_total(feb)


_KEYS = ", ".join(d.key for d in DIMENSIONS)
_RESOURCE_MONTHLY_DIFF = f"""
    WITH f AS (SELECT date_trunc('month', charge_date)::date AS m, {_KEYS}, sum(actual_cost) AS a,
                      sum(amortized_cost) AS am, sum(list_cost) AS l, sum(quantity) AS q, count(*) AS n
               FROM mart.fact_cost_daily GROUP BY 1, {_KEYS}),
         r AS (SELECT charge_month AS m, {_KEYS}, actual_cost AS a, amortized_cost AS am, list_cost AS l,
                      quantity AS q, fact_rows AS n FROM mart.agg_cost_resource_monthly)
    SELECT (SELECT count(*) FROM (SELECT * FROM f EXCEPT ALL SELECT * FROM r) x)
         + (SELECT count(*) FROM (SELECT * FROM r EXCEPT ALL SELECT * FROM f) y)"""


def test_resource_monthly_aggregate_is_the_fact_summed_per_month(mart_settings, lake, gold, owner):
    load_gold(mart_settings, lake, run_id="r1")
    with owner.connect() as conn:
        assert conn.execute(sa.text(_RESOURCE_MONTHLY_DIFF)).scalar() == 0
        months = conn.execute(sa.text("SELECT DISTINCT charge_month FROM mart.agg_cost_resource_monthly")).scalars()
        assert sorted(months) == [dt.date(2026, 1, 1), dt.date(2026, 2, 1)]
    # Reloading one month replaces exactly that month's rows.
    feb = synthetic_gold.gold_cost_daily(start=dt.date(2026, 2, 1), days=5, rows_per_day=40, resources=90, seed=11)
    synthetic_gold.write_gold(lake, feb, tags=False)
    load_gold(mart_settings, lake, run_id="r2", months=["2026-02"])
    with owner.connect() as conn:
        assert conn.execute(sa.text(_RESOURCE_MONTHLY_DIFF)).scalar() == 0
        feb_total = conn.execute(
            sa.text("SELECT sum(actual_cost) FROM mart.agg_cost_resource_monthly WHERE charge_month = '2026-02-01'")
        ).scalar()
    assert feb_total == _gold_total(feb)


_ROWS = {
    "fact": f"SELECT charge_date, {_KEYS}, actual_cost, amortized_cost, list_cost, quantity FROM mart.fact_cost_daily",
    "daily": "SELECT * FROM mart.agg_cost_daily",
    "monthly": "SELECT * FROM mart.agg_cost_monthly",
    "resource_monthly": "SELECT * FROM mart.agg_cost_resource_monthly",
    "by_tag": "SELECT * FROM mart.agg_cost_by_tag",
    "resources": "SELECT * FROM mart.dim_resource",
}


def _rows(engine: sa.Engine) -> dict[str, list]:
    """Every row a reader could see (load ids aside), sorted."""
    with engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(sa.text(sql)).all()), key=repr) for name, sql in _ROWS.items()}


def test_replacing_some_days_in_place_ends_where_a_month_load_does(mart_settings, lake, gold, owner):
    load_gold(mart_settings, lake, run_id="r1")
    before = _rows(owner)
    # Gold restates February 6 and 7 (other costs, a new resource, renamed ones) and brings February 8.
    feb = gold.filter(pc.equal(gold["charge_month"], "2026-02"))
    kept = feb.filter(pc.less(feb["charge_date"], pa.scalar(dt.date(2026, 2, 6))))
    new = synthetic_gold.gold_cost_daily(start=dt.date(2026, 2, 6), days=3, rows_per_day=70, resources=90, seed=7)
    renamed = pc.if_else(pc.equal(new["resource_name"], "r3"), "r3-renamed", new["resource_name"])
    new = new.set_column(new.schema.get_field_index("resource_name"), "resource_name", renamed)
    synthetic_gold.write_gold(lake, pa.concat_tables([kept, new.cast(kept.schema)]))
    days = {"2026-02": ["2026-02-06", "2026-02-07", "2026-02-08"], "2026-01": []}
    stats = load_gold(mart_settings, lake, run_id="r2", months=["2026-02"], days=days)
    assert stats.days == {"2026-02": days["2026-02"]}
    assert stats.rows_loaded == new.num_rows
    assert stats.rows_replaced == feb.num_rows - kept.num_rows
    in_place = _rows(owner)
    assert in_place != before
    with owner.connect() as conn:
        assert conn.execute(sa.text(_RESOURCE_MONTHLY_DIFF)).scalar() == 0
    # The same month loaded whole (copied and swapped in) gives exactly the same rows.
    stats = load_gold(mart_settings, lake, run_id="r3", months=["2026-02"])
    assert stats.days == {}
    assert _rows(owner) == in_place


def test_days_of_a_month_the_mart_lacks_load_the_month_whole(mart_settings, lake, gold, owner):
    load_gold(mart_settings, lake, run_id="r1", months=["2026-01"])
    stats = load_gold(mart_settings, lake, run_id="r2", months=["2026-02"], days={"2026-02": ["2026-02-07"]})
    assert stats.days == {}
    assert stats.rows_loaded == pc.sum(pc.equal(gold["charge_month"], "2026-02")).as_py()
    with pytest.raises(ValueError, match="not all in 2026-02"):
        load_gold(mart_settings, lake, run_id="r3", months=["2026-02"], days={"2026-02": ["2026-03-01"]})


def test_attributes_follow_the_last_month_and_null_names_are_the_none_member(mart_settings, lake, owner):
    # Resource r0 is called "a" in January, "b" in February and "a" again in March: the dimension upserts
    # each member once per load unless its attributes change, and must still end on March's name.
    parts = []
    for i, (start, name) in enumerate(
        [(dt.date(2026, 1, 1), "a"), (dt.date(2026, 2, 1), "b"), (dt.date(2026, 3, 1), "a")]
    ):
        month = synthetic_gold.gold_cost_daily(start=start, days=3, rows_per_day=20, resources=5, seed=i)
        names = pc.if_else(pc.equal(month["resource_name"], "r0"), name, month["resource_name"])
        month = month.set_column(month.schema.get_field_index("resource_name"), "resource_name", names)
        parts.append(month)
    daily = pa.concat_tables(parts)
    # Null service names (gold allows nulls) land on the "(none)" member, like empty ones.
    is_storage = pc.equal(daily["service_name"], "Storage")
    service = pc.if_else(is_storage, pa.scalar(None, pa.string()), daily["service_name"])
    daily = daily.set_column(daily.schema.get_field_index("service_name"), "service_name", service)
    synthetic_gold.write_gold(lake, daily)
    stats = load_gold(mart_settings, lake, run_id="r1")
    assert stats.rows_loaded == daily.num_rows
    with owner.connect() as conn:
        names = dict(conn.execute(sa.text("SELECT resource_name, count(*) FROM mart.dim_resource GROUP BY 1")).all())
        none_cost = conn.execute(
            sa.text(
                "SELECT sum(f.actual_cost) FROM mart.fact_cost_daily f JOIN mart.dim_service s USING (service_key) "
                "WHERE s.label = '(none)'"
            )
        ).scalar()
    assert names.get("a") == 1 and "b" not in names
    was_none = pc.or_(is_storage, pc.fill_null(pc.equal(daily["service_name"], ""), False))
    want = pc.sum(pc.filter(daily["actual_cost"], was_none)).as_py()
    assert none_cost == want > 0


def test_a_failed_load_leaves_the_previous_state(mart_settings, lake, gold, owner, monkeypatch):
    load_gold(mart_settings, lake, run_id="r1")
    before = _snapshot(owner)
    synthetic_gold.write_gold(lake, synthetic_gold.gold_cost_daily(start=START, days=14, rows_per_day=30, seed=3))

    def explode(cur, months):
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(mart_load, "_rebuild_monthly", explode)
    with pytest.raises(RuntimeError, match="injected"):
        load_gold(mart_settings, lake, run_id="r2")
    assert _snapshot(owner) == before
    with owner.connect() as conn:
        status = conn.execute(sa.text("SELECT status, error FROM mart.load_history WHERE run_id = 'r2'")).one()
    assert status[0] == "failed" and "injected" in status[1]
    with owner.connect() as conn:
        staged = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'mart_stage'")).scalar()
    assert staged == 0  # the failed load's staging tables are gone


def test_unknown_month_and_missing_gold_fail_clearly(mart_settings, lake):
    with pytest.raises(LoadError, match="does not exist"):
        load_gold(mart_settings, lake, run_id="r1")
    synthetic_gold.write_gold(lake, synthetic_gold.gold_cost_daily(start=START, days=2, rows_per_day=5), tags=False)
    with pytest.raises(ValueError):
        load_gold(mart_settings, lake, run_id="r1", months=["2026-13"])


def _block_the_swap(owner: sa.Engine) -> sa.Connection:
    """A reader transaction holding ACCESS SHARE on the fact table: the load's DETACH waits behind it,
    i.e. the load is paused inside its transaction after COPYing the new data."""
    conn = owner.connect()
    conn.execute(sa.text("SELECT count(*) FROM mart.fact_cost_daily"))
    return conn


def _wait_for_blocked_load(owner: sa.Engine, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    with owner.connect() as conn:
        while time.monotonic() < deadline:
            pid = conn.execute(
                sa.text(
                    "SELECT h.backend_pid FROM mart.load_history h JOIN pg_stat_activity a ON a.pid = h.backend_pid "
                    "WHERE h.status = 'running' AND a.wait_event_type = 'Lock'"
                )
            ).scalar()
            if pid:
                return pid
            conn.rollback()  # pg_stat_activity is a per-transaction snapshot: end it to see changes
            time.sleep(0.05)
    raise AssertionError("the load never reached the swap")


def _wait_backend_gone(owner: sa.Engine, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with owner.connect() as conn:
        while conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar():
            if time.monotonic() > deadline:
                activity = conn.execute(
                    sa.text(
                        "SELECT state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity WHERE pid = :p"
                    ),
                    {"p": pid},
                ).all()
                raise AssertionError(f"backend {pid} still alive: {activity}")
            conn.rollback()  # pg_stat_activity is a per-transaction snapshot: end it to see changes
            time.sleep(0.05)


def test_load_terminated_inside_its_transaction_leaves_old_data(mart_settings, lake, gold, owner):
    load_gold(mart_settings, lake, run_id="r1")
    before = _snapshot(owner)
    synthetic_gold.write_gold(lake, synthetic_gold.gold_cost_daily(start=START, days=14, rows_per_day=30, seed=5))
    blocker = _block_the_swap(owner)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            load_gold(mart_settings, lake, run_id="r2")
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        pid = _wait_for_blocked_load(owner)
        with owner.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        blocker.close()
        thread.join(60)
    assert errors and isinstance(errors[0], psycopg2.OperationalError), errors
    assert _snapshot(owner) == before
    with owner.connect() as conn:
        # Its connection died, so nobody could mark it failed: it stays 'running' with a dead backend pid.
        assert conn.execute(sa.text("SELECT status FROM mart.load_history WHERE run_id = 'r2'")).scalar() == "running"


@pytest.mark.slow  # spawns a Python process that imports the loader
def test_load_process_killed_inside_its_transaction_leaves_old_data(mart_settings, lake, gold, owner, tmp_path):
    load_gold(mart_settings, lake, run_id="r1")
    before = _snapshot(owner)
    synthetic_gold.write_gold(lake, synthetic_gold.gold_cost_daily(start=START, days=14, rows_per_day=30, seed=5))
    script = (
        "import sys\n"
        "from backend.mart.load import load_gold\n"
        "from tests.conftest import make_settings\n"
        "from backend.lake.delta import lake_from_settings\n"
        "s = make_settings(sys.argv[1], database_url=sys.argv[2], lake_uri=sys.argv[3])\n"
        "load_gold(s, lake_from_settings(s), run_id='killed')\n"
    )
    blocker = _block_the_swap(owner)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), mart_settings.database_url, mart_settings.lake_uri], env=env
    )
    try:
        pid = _wait_for_blocked_load(owner)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        blocker.close()
    # The orphaned backend finishes its statement, finds its client gone and rolls back.
    _wait_backend_gone(owner, pid)
    assert _snapshot(owner) == before
    with owner.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT status FROM mart.load_history WHERE run_id = 'killed'")).scalar() == "running"
        )
    # The next load (or anyone) finds it abandoned.
    assert mark_abandoned_loads(owner) == 1
    load_gold(mart_settings, lake, run_id="r3")
    with owner.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT run_id, status FROM mart.load_history")).all())
    assert statuses == {"r1": "succeeded", "killed": "failed", "r3": "succeeded"}
