"""Crash-suite driver shared by the test and the benchmark: SIGKILL a pipeline process at a chosen step, rerun, and check."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from backend.config import REPO_ROOT
from backend.lake import Lake
from backend.lake.catalog import SILVER_COSTS
from backend.mart.reconcile import reconcile

log = logging.getLogger(__name__)

KILLABLE_STEPS = ("ingest", "bronze", "silver", "gold", "mart", "analytics")


@dataclass
class CrashOutcome:
    killed_step: str | None
    killed_run_status: str | None
    final_status: str
    mart_actual: Decimal
    mart_amortized: Decimal
    silver_duplicates: int
    mart_duplicates: int
    reconciliation_mismatches: int  # days where mart, silver and the source's totals disagree


def pipeline_env(*, database_url: str, bootstrap: str, lake_uri: str, data_dir: Path, topic: str, demo_rows: int):
    """The environment of a CLI pipeline run against the given servers (every URL set: nothing embedded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_", "LAKE_", "DEMO_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "APP_ENV": "test",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_COSTS": topic,
            "KAFKA_CONSUMER_GROUP": f"{topic}-group",
            "LAKE_URI": lake_uri,
            "DATA_DIR": str(data_dir),
            "DEMO_MODE": "true",
            "DEMO_ROWS": str(demo_rows),
            "SPARK_DRIVER_MEMORY": "2g",
            "SPARK_SHUFFLE_PARTITIONS": "4",
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def start_run(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_file = log_path.open("ab")
    # Own process group: the kill takes the Spark JVM down with the Python process, like a container kill.
    return subprocess.Popen(
        [sys.executable, "-m", "backend.pipeline", "run", "--sources", "demo"],
        env=env,
        cwd=REPO_ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def running_step(engine: sa.Engine) -> tuple[str, str] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT s.run_id, s.step FROM ops.pipeline_steps s JOIN ops.pipeline_runs r USING (run_id)"
                " WHERE r.status = 'running' AND s.status = 'running' ORDER BY r.started_at DESC LIMIT 1"
            )
        ).first()
    return (row.run_id, row.step) if row else None


def kill_at_step(
    proc: subprocess.Popen, engine: sa.Engine, step: str, *, rng: random.Random, timeout: float
) -> str | None:
    """Wait until `step` runs, let it work a random moment, SIGKILL the process group. Returns the killed run id
    (None if the run finished or failed before reaching the step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        current = running_step(engine)
        if current and current[1] == step:
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return current[0]
            return None
        time.sleep(0.05)
    return None


def wait_ok(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def expected_totals(demo_rows: int, seed: int = 42) -> tuple[Decimal, Decimal]:
    """What the demo source delivers up to today: the source totals the mart must match to the cent."""
    from backend.demo.estate import generate_estate

    today = datetime.now(UTC).date()
    estate = generate_estate(seed=seed, start=date(today.year - 1, today.month, 1), months=13, target_rows=demo_rows)
    costs = estate.costs
    day = pc.cast(costs["ChargePeriodStart"], pa.date32())
    delivered = costs.filter(pc.less_equal(day, pa.scalar(today, pa.date32())))
    return (
        pc.sum(delivered["BilledCost"]).as_py() or Decimal(0),
        pc.sum(delivered["EffectiveCost"]).as_py() or Decimal(0),
    )


def check_state(engine: sa.Engine, lake: Lake) -> tuple[Decimal, Decimal, int, int, int]:
    """Mart totals, duplicate natural keys in silver, duplicate grain rows in the mart fact, and the
    days where mart, silver and the source's reported totals disagree."""
    silver = lake.read_arrow(SILVER_COSTS.name, columns=SILVER_COSTS.key)
    grouped = silver.group_by(SILVER_COSTS.key, use_threads=False).aggregate([([], "count_all")])
    silver_dupes = int(pc.sum(pc.greater(grouped["count_all"], 1)).as_py() or 0)
    with engine.connect() as conn:
        keys = (
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mart'"
                    " AND table_name = 'fact_cost_daily' AND column_name LIKE '%\\_key' ORDER BY ordinal_position"
                )
            )
            .scalars()
            .all()
        )
        cols = ", ".join(["charge_date", *keys])
        mart_dupes = conn.execute(
            sa.text(f"SELECT count(*) FROM (SELECT 1 FROM mart.fact_cost_daily GROUP BY {cols} HAVING count(*) > 1) d")
        ).scalar()
        actual, amortized = conn.execute(
            sa.text("SELECT coalesce(sum(actual_cost), 0), coalesce(sum(amortized_cost), 0) FROM mart.fact_cost_daily")
        ).one()
    # A fresh check over every month: the rerun's own check covers only the months it loaded, and a run
    # killed after its mart load but before its check leaves the rerun nothing to load.
    mismatches = len(reconcile(engine, lake=lake, run_id="crash-check").mismatches)
    return Decimal(actual), Decimal(amortized), silver_dupes, int(mart_dupes), mismatches


def run_status(engine: sa.Engine, run_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM ops.pipeline_runs WHERE run_id = :r"), {"r": run_id}).scalar()


def crash_cycle(
    *, env: dict[str, str], engine: sa.Engine, lake: Lake, step: str, rng: random.Random, log_path: Path
) -> CrashOutcome:
    """One cycle: a run killed at `step`, then an uninterrupted run; returns what the checks need."""
    proc = start_run(env, log_path)
    killed = kill_at_step(proc, engine, step, rng=rng, timeout=900)
    if killed is None and proc.poll() is None:
        wait_ok(proc, 900)
    rc = wait_ok(start_run(env, log_path), 900)
    actual, amortized, silver_dupes, mart_dupes, mismatches = check_state(engine, lake)
    return CrashOutcome(
        killed_step=step if killed else None,
        killed_run_status=run_status(engine, killed) if killed else None,
        final_status="succeeded" if rc == 0 else f"exit {rc}",
        mart_actual=actual,
        mart_amortized=amortized,
        silver_duplicates=silver_dupes,
        mart_duplicates=mart_dupes,
        reconciliation_mismatches=mismatches,
    )
