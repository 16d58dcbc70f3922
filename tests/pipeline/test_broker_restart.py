"""A broker that forgets everything between produce and consume costs a re-fetch, never data: silver ends identical."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from backend.lake.catalog import SILVER_COSTS
from backend.pipeline.service import PipelineService
from backend.resources import open_resources
from backend.runtime import Runtime
from backend.runtime import kafka as kafka_service
from tests.conftest import create_database, make_settings

DEMO_ROWS = 5000
# Lineage differs by design between the two histories (batch ids, offsets, run ids, timestamps).
LINEAGE = {"x_BilledBatchId", "x_EffectiveBatchId", "x_BronzeTopic", "x_BronzePartition", "x_BronzeOffset"}
LINEAGE |= {"x_BatchId", "x_BronzeRunId", "x_RunId", "x_UpdatedAt"}


def _service(tmp_path, name: str, database_url: str, bootstrap: str) -> PipelineService:
    settings = make_settings(
        tmp_path / name,
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_costs=f"restart.{name}.{uuid.uuid4().hex[:6]}",
        lake_uri=str(tmp_path / name / "lake"),
        demo_mode=True,
        demo_rows=DEMO_ROWS,
    )
    return PipelineService(open_resources(Runtime(settings)))


def _silver(service: PipelineService) -> pa.Table:
    table = service.lake.read_arrow(SILVER_COSTS.name)
    table = table.select([c for c in table.column_names if c not in LINEAGE])
    return table.sort_by([(k, "ascending") for k in SILVER_COSTS.key])


@pytest.mark.slow
def test_broker_restart_between_produce_and_consume_leaves_silver_identical(tmp_path, pg_admin_url, spark):
    port = kafka_service.free_port()
    log_path = tmp_path / "tansu.log"
    proc, address = kafka_service.spawn(log_path, port=port)
    services: list[PipelineService] = []
    try:
        interrupted = _service(tmp_path, "interrupted", create_database(pg_admin_url), address)
        services.append(interrupted)
        sent = interrupted.run(steps=["ingest"], sources=["demo"], trigger="test")
        assert sent.status == "succeeded" and sent.steps["ingest"].rows_out > 0

        kafka_service.terminate(proc.pid)  # memory storage: every message and offset is gone
        proc, _ = kafka_service.spawn(log_path, port=port)

        # The lost batch never reached bronze, so its cursor never moved: this run fetches the same days again.
        again = interrupted.run(steps=["ingest", "bronze", "silver"], sources=["demo"], trigger="test")
        assert again.status == "succeeded", again.error
        assert again.steps["ingest"].rows_out == sent.steps["ingest"].rows_out

        clean = _service(tmp_path, "clean", create_database(pg_admin_url), address)
        services.append(clean)
        baseline = clean.run(steps=["ingest", "bronze", "silver"], sources=["demo"], trigger="test")
        assert baseline.status == "succeeded", baseline.error

        got, want = _silver(interrupted), _silver(clean)
        assert got.num_rows == want.num_rows > 0
        assert got.equals(want)
    finally:
        kafka_service.terminate(proc.pid)
        for service in services:
            service.close()
