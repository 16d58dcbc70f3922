"""Crash safety: a pipeline process SIGKILLed at a random step loses and duplicates nothing once rerun."""

from __future__ import annotations

import os
import random

import pytest

from backend.lake import Lake
from backend.lake.storage import LakeLocation
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from tests.pipeline.crash import KILLABLE_STEPS, crash_cycle, expected_totals, pipeline_env

DEMO_ROWS = 10000  # small and fast; the synthetic generator is exercised at other sizes in tests/sources


@pytest.mark.slow
def test_sigkill_at_random_steps_loses_and_duplicates_nothing(tmp_path, pg_url, kafka_bootstrap, kafka_topic):
    upgrade(pg_url)
    engine = owner_engine(pg_url)
    lake = Lake(LakeLocation(uri=str(tmp_path / "lake")))
    env = pipeline_env(
        database_url=pg_url,
        bootstrap=kafka_bootstrap,
        lake_uri=str(tmp_path / "lake"),
        data_dir=tmp_path / "data",
        topic=kafka_topic,
        demo_rows=DEMO_ROWS,
    )
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261121")))
    cycles = int(os.environ.get("CRASH_CYCLES", "2"))
    steps = rng.sample(KILLABLE_STEPS, k=min(cycles, len(KILLABLE_STEPS)))
    want_actual, want_amortized = expected_totals(DEMO_ROWS)
    try:
        for step in steps:
            outcome = crash_cycle(env=env, engine=engine, lake=lake, step=step, rng=rng, log_path=tmp_path / "runs.log")
            log_tail = (tmp_path / "runs.log").read_text()[-3000:]
            assert outcome.final_status == "succeeded", log_tail
            if outcome.killed_step:
                assert outcome.killed_run_status == "abandoned", outcome
            assert outcome.mart_actual == want_actual, (step, outcome)
            assert outcome.mart_amortized == want_amortized, (step, outcome)
            assert outcome.silver_duplicates == 0 and outcome.mart_duplicates == 0, outcome
            assert outcome.reconciliation_mismatches == 0, outcome
    finally:
        engine.dispose()
