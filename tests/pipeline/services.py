"""A PipelineService on the session's real servers with its own topic, consumer group and lake (tests build it per case)."""

from __future__ import annotations

import uuid

from backend.pipeline.service import PipelineService
from backend.resources import open_resources
from backend.runtime import Runtime
from tests.conftest import make_settings


def pipeline_service(tmp_path, pg_url: str, kafka_bootstrap: str, **overrides) -> PipelineService:
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_costs=f"costs.{tag}",
        kafka_consumer_group=f"costs-{tag}",
        lake_uri=str(tmp_path / "lake"),
        **overrides,
    )
    return PipelineService(open_resources(Runtime(settings)))
