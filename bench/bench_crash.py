"""Crash suite at scale: SIGKILL the pipeline at random steps (>= 20 cycles), rerun, count rows lost and duplicated."""

from __future__ import annotations

import logging
import random
import tempfile
from pathlib import Path

import sqlalchemy as sa

from backend.config import Settings
from backend.lake import Lake
from backend.mart.migrate import upgrade
from backend.runtime import Runtime
from bench.common import BenchResult, timed
from tests.pipeline.crash import KILLABLE_STEPS, crash_cycle, expected_totals, pipeline_env

log = logging.getLogger("bench.crash")

DEMO_ROWS = 10_000


def main(quick: bool = False) -> None:
    cycles = 3 if quick else 20
    with tempfile.TemporaryDirectory(prefix="costlake-crash-") as tmp:
        root = Path(tmp)
        # Servers the killed processes do not own: embedded Postgres and Tansu started by this process.
        runtime = Runtime(Settings(_env_file=None, app_env="test", data_dir=root / "servers"))
        endpoints = runtime.start()
        try:
            upgrade(endpoints.database_url)
            engine = sa.create_engine(endpoints.database_url)
            lake = Lake(endpoints.lake.__class__(uri=str(root / "lake")))
            env = pipeline_env(
                database_url=endpoints.database_url,
                bootstrap=endpoints.kafka_bootstrap_servers,
                lake_uri=str(root / "lake"),
                data_dir=root / "data",
                topic="crash.cost-records",
                demo_rows=DEMO_ROWS,
            )
            want_actual, want_amortized = expected_totals(DEMO_ROWS)
            rng = random.Random(20261121)
            result = BenchResult(
                "crash",
                f"Pipeline SIGKILLed (process group) at a random step, then rerun; {DEMO_ROWS} demo rows, "
                "external Postgres/Kafka, local lake. Checks after every rerun: mart totals vs source to the cent, "
                "duplicate keys in silver and the mart, status of the killed run.",
            )
            for cycle in range(cycles):
                step = rng.choice(KILLABLE_STEPS)
                with timed() as t:
                    outcome = crash_cycle(
                        env=env, engine=engine, lake=lake, step=step, rng=rng, log_path=root / "runs.log"
                    )
                row = {
                    "cycle": cycle + 1,
                    "kill_at": step,
                    "killed": outcome.killed_step is not None,
                    "killed_run_status": outcome.killed_run_status,
                    "rerun": outcome.final_status,
                    "actual_diff": str(outcome.mart_actual - want_actual),
                    "amortized_diff": str(outcome.mart_amortized - want_amortized),
                    "totals_match": outcome.mart_actual == want_actual and outcome.mart_amortized == want_amortized,
                    "silver_dupes": outcome.silver_duplicates,
                    "mart_dupes": outcome.mart_duplicates,
                    "reconciliation_mismatches": outcome.reconciliation_mismatches,
                    "seconds": round(t.seconds, 1),
                }
                log.info("crash cycle %s", row)
                result.rows.append(row)
            killed = sum(1 for r in result.rows if r["killed"])
            bad = [r for r in result.rows if not r["totals_match"]]
            result.notes.append(
                f"{killed} runs killed of {cycles} cycles; cycles with a mart/source mismatch: {len(bad)}; "
                f"silver duplicates: {sum(r['silver_dupes'] for r in result.rows)}; "
                f"mart duplicates: {sum(r['mart_dupes'] for r in result.rows)}"
            )
            result.write()
            engine.dispose()
        finally:
            runtime.stop()
