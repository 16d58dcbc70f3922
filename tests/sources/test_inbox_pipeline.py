"""The inbox through the real pipeline (Kafka, bronze): a file leaves the inbox only once bronze holds it, and never loads twice."""

from __future__ import annotations

import uuid

import pytest

from backend.lake.catalog import BRONZE_COST_RECORDS
from backend.pipeline.service import PipelineService
from backend.resources import open_resources
from backend.runtime import Runtime
from tests.conftest import make_settings
from tests.sources.test_files import FOCUS_COLUMNS, _csv, _focus_rows

pytestmark = pytest.mark.slow
FOCUS = _csv(FOCUS_COLUMNS, _focus_rows())


def _bronze_rows(service: PipelineService) -> int:
    lake = service.lake
    return lake.read_arrow(BRONZE_COST_RECORDS.name).num_rows if lake.exists(BRONZE_COST_RECORDS.name) else 0


def test_inbox_file_moves_after_bronze_and_a_re_drop_or_a_bad_file_loads_nothing(tmp_path, pg_url, kafka_bootstrap):
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_costs=f"inbox.{uuid.uuid4().hex[:8]}",
        kafka_consumer_group=f"inbox-{uuid.uuid4().hex[:8]}",
        lake_uri=str(tmp_path / "lake"),
    )
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True)
    service = PipelineService(open_resources(Runtime(settings)))
    try:
        (inbox / "focus-march.csv").write_bytes(FOCUS)
        # Sent to Kafka, but bronze has not got it: the file stays where it was.
        sent = service.run(steps=["ingest"], sources=["inbox"], trigger="test")
        assert sent.status == "succeeded", sent.error
        assert [i["status"] for i in sent.steps["ingest"].detail["inbox"]] == ["sent"]
        assert (inbox / "focus-march.csv").exists() and not (inbox / "processed").exists()

        done = service.run(steps=["ingest", "bronze"], sources=["inbox"], trigger="test")
        assert done.status == "succeeded", done.error
        assert len(done.steps["bronze"].detail["committed_batches"]) == 1
        assert (inbox / "processed" / "focus-march.csv").read_bytes() == FOCUS
        assert not (inbox / "focus-march.csv").exists()
        loaded = _bronze_rows(service)
        assert loaded > 0

        # The same export dropped again under another name, and a file that is not a cost export.
        (inbox / "focus-march-again.csv").write_bytes(FOCUS)
        (inbox / "notes.csv").write_bytes(b"name,amount\nlunch,12\n")
        again = service.run(steps=["ingest", "bronze"], sources=["inbox"], trigger="test")
        assert again.status == "succeeded", again.error
        status = {i["file"]: i["status"] for i in again.steps["ingest"].detail["inbox"]}
        assert status == {"focus-march-again.csv": "skipped", "notes.csv": "refused"}
        assert "focus-march.csv" in (inbox / "rejected" / "focus-march-again.csv.error.txt").read_text()
        assert (inbox / "rejected" / "notes.csv.error.txt").read_text().strip()
        assert _bronze_rows(service) == loaded  # nothing sent, nothing already loaded touched
        assert (inbox / "processed" / "focus-march.csv").read_bytes() == FOCUS
    finally:
        service.close()
