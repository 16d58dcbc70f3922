"""End to end on the compose environment: `python -m backend.pipeline run` as the app container would run it.

The environment is exactly the app service's (container addresses swapped for the local test servers),
plus DEMO_ROWS to keep the demo estate small enough for CI.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.mart.db import owner_engine
from tests.deploy.conftest import ENV_ONLY_SETTINGS_PRELUDE, LocalStack, app_process_env

pytestmark = pytest.mark.slow

DEMO_ROWS = 10_000


def _pipeline_cli_missing() -> str | None:
    for module in ("backend.pipeline.__main__", "backend.pipeline.service", "backend.pipeline.steps"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"TODO: pipeline not importable yet ({module}: {exc}); enable when `python -m backend.pipeline run` exists"
    return None


@pytest.fixture
def pipeline_cli() -> None:
    """Skips before the stack is set up while the pipeline is missing."""
    reason = _pipeline_cli_missing()
    if reason:
        pytest.skip(reason)


def test_pipeline_runs_end_to_end_on_the_compose_environment(
    pipeline_cli: None, local_stack: LocalStack, tmp_path: Path
) -> None:
    code = ENV_ONLY_SETTINGS_PRELUDE + (
        "import sys; from backend.pipeline.__main__ import main; sys.exit(main(['run']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**app_process_env(local_stack, tmp_path), "DEMO_ROWS": str(DEMO_ROWS)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-6000:]

    owner = owner_engine(local_stack.app_env["DATABASE_URL"], poolclass=sa.pool.NullPool)
    try:
        with owner.connect() as conn:
            status, trigger = conn.execute(
                sa.text("SELECT status, trigger FROM ops.pipeline_runs ORDER BY started_at DESC LIMIT 1")
            ).one()
            steps = dict(conn.execute(sa.text("SELECT step, status FROM ops.pipeline_steps")).all())
            actual, amortized = conn.execute(
                sa.text("SELECT sum(actual_cost), sum(amortized_cost) FROM mart.fact_cost_daily")
            ).one()
    finally:
        owner.dispose()
    assert (status, trigger) == ("succeeded", "cli")
    assert set(steps.values()) == {"succeeded"}, steps
    # Every cost row the demo source delivered is in the mart, to the cent (through Kafka, the S3 lake, Spark).
    from tests.pipeline.crash import expected_totals

    assert (actual, amortized) == expected_totals(DEMO_ROWS)
