"""An S3 prefix as inbox (INBOX_URI) on the S3 test server: export runs and files pulled once ready, imported
through the real pipeline to the mart, settled on the bucket, and what a crash leaves half done finished later."""

from __future__ import annotations

import io
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from backend.sources.remote_inbox import RemoteInbox
from tests.conftest import S3_TEST_KEY, S3_TEST_SECRET, make_settings
from tests.pipeline.services import pipeline_service
from tests.pipeline.test_real_files import STEPS, _ea_row, _export_run, _mart_totals, _total

pytestmark = pytest.mark.slow


def _bucket(endpoint: str) -> tuple[object, str]:
    from minio import Minio

    client = Minio(endpoint.split("://", 1)[1], access_key=S3_TEST_KEY, secret_key=S3_TEST_SECRET, secure=False)
    name = f"exports-{uuid.uuid4().hex[:10]}"
    client.make_bucket(name)
    return client, name


def _upload(client, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def _upload_tree(client, bucket: str, prefix: str, folder: Path, *, skip: str = "") -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != skip:
            _upload(client, bucket, f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def _keys(client, bucket: str) -> set[str]:
    return {o.object_name for o in client.list_objects(bucket, recursive=True)}


def _s3(endpoint: str, bucket: str) -> dict:
    return {
        "inbox_uri": f"s3://{bucket}/drop",
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": S3_TEST_KEY,
        "s3_secret_access_key": S3_TEST_SECRET,
    }


def test_an_s3_prefix_is_an_inbox_export_runs_once_their_manifest_is_there(
    tmp_path, pg_url, kafka_bootstrap, s3_endpoint
):
    client, bucket = _bucket(s3_endpoint)
    rows = [_ea_row(i, Decimal(i + 1) / 7) for i in range(14)]
    run = _export_run(tmp_path / "export", "run-9", rows, dataset="ActualCost")
    _upload_tree(client, bucket, "drop/run-9", run, skip="manifest.json")  # Azure writes the manifest last
    _upload(client, bucket, "drop/notes.csv", b"name,amount\nlunch,12\n")
    service = pipeline_service(tmp_path, pg_url, kafka_bootstrap, demo_mode=False, **_s3(s3_endpoint, bucket))
    try:
        first = service.run(steps=STEPS, sources=["inbox"], trigger="test")
        assert first.status == "succeeded", first.error
        remote = first.steps["ingest"].detail["inbox_remote"]
        assert remote["pulled"] == ["notes.csv"] and remote["waiting"] == ["run-9"]
        assert [i["status"] for i in first.steps["ingest"].detail["inbox"]] == ["refused"]
        keys = _keys(client, bucket)
        assert "drop/rejected/notes.csv" in keys and "drop/notes.csv" not in keys
        reason = client.get_object(bucket, "drop/rejected/notes.csv.error.txt").read().decode()
        assert "notes.csv" in reason or reason.strip()
        assert _mart_totals(service) == {}

        _upload(client, bucket, "drop/run-9/manifest.json", (run / "manifest.json").read_bytes())
        done = service.run(steps=STEPS, sources=["inbox"], trigger="test")
        assert done.status == "succeeded", done.error
        assert done.steps["ingest"].detail["inbox_remote"]["pulled"] == ["run-9"]
        assert _mart_totals(service) == {"EUR": (_total(rows, "CostInBillingCurrency"), None)}
        keys = _keys(client, bucket)
        assert not any(k.startswith("drop/run-9/") for k in keys), keys
        assert "drop/processed/run-9/manifest.json" in keys
        assert (service.settings.inbox_dir / "processed" / "run-9" / "manifest.json").exists()

        # Nothing new on the bucket: a rerun pulls nothing and changes nothing.
        again = service.run(steps=STEPS, sources=["inbox"], trigger="test")
        assert again.status == "succeeded", again.error
        assert again.steps["ingest"].detail["inbox_remote"]["pulled"] == []
        assert _mart_totals(service) == {"EUR": (_total(rows, "CostInBillingCurrency"), None)}
    finally:
        service.close()


def test_an_outcome_a_crash_left_unsettled_is_settled_by_the_next_pull(tmp_path, s3_endpoint):
    client, bucket = _bucket(s3_endpoint)
    _upload(client, bucket, "drop/a.csv", b"x,y\n1,2\n")
    settings = make_settings(tmp_path, **_s3(s3_endpoint, bucket))
    inbox = RemoteInbox(settings)
    assert inbox.pull().pulled == ["a.csv"]
    # The scan imported it and moved the local copy, then the process died before the bucket was told.
    (settings.inbox_dir / "processed").mkdir()
    (settings.inbox_dir / "a.csv").rename(settings.inbox_dir / "processed" / "a.csv")
    report = inbox.pull()
    assert report.settled == ["a.csv"] and report.pulled == []
    assert _keys(client, bucket) == {"drop/processed/a.csv"}


def test_an_unreadable_bucket_fails_the_run_naming_the_settings(tmp_path, pg_url, kafka_bootstrap, s3_endpoint):
    service = pipeline_service(
        tmp_path, pg_url, kafka_bootstrap, demo_mode=False, **_s3(s3_endpoint, f"missing-{uuid.uuid4().hex[:8]}")
    )
    try:
        (service.settings.inbox_dir).mkdir(parents=True, exist_ok=True)
        summary = service.run(steps=["ingest"], sources=["inbox"], trigger="test")
        assert summary.status == "failed"
        assert "INBOX_URI" in summary.error and "S3_" in summary.error
    finally:
        service.close()


def test_inbox_uri_must_name_a_bucket(tmp_path):
    with pytest.raises(ValueError, match="INBOX_URI"):
        make_settings(tmp_path, inbox_uri="/srv/drop")
    with pytest.raises(ValueError, match="INBOX_URI"):
        make_settings(tmp_path, inbox_uri="s3://")
    assert make_settings(tmp_path, inbox_uri="s3a://b/p/").inbox_uri == "s3://b/p"
