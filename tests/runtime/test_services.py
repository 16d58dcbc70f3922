"""The runtime: embedded servers start, are healthy, are shared and stopped; external URLs are used as given."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from backend.config import REPO_ROOT
from backend.mart.db import owner_engine
from backend.runtime import Runtime
from backend.runtime.registry import ServiceRegistry
from tests.conftest import make_settings


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_dead(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_embedded_services_start_healthy_and_stop(tmp_path):
    settings = make_settings(tmp_path)
    runtime = Runtime(settings)
    endpoints = runtime.start()
    assert endpoints.embedded == {"postgres": True, "kafka": True, "lake": True}
    statuses = {s.name: s for s in runtime.status() if s.name != "spark"}
    assert all(s.healthy for s in statuses.values()), statuses
    assert "***" not in statuses["postgres"].location or "@" in statuses["postgres"].location
    registry = ServiceRegistry(settings.run_dir)
    pg_pid, kafka_pid = registry.read("postgres").pid, registry.read("kafka").pid
    runtime.stop()
    assert _wait_dead(pg_pid) and _wait_dead(kafka_pid)
    assert registry.read("postgres") is None and registry.read("kafka") is None

    # A second start reuses the persisted database.
    import sqlalchemy as sa

    runtime = Runtime(settings)
    url = runtime.start().database_url
    engine = owner_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS keepme (x int)"))
        conn.execute(sa.text("INSERT INTO keepme VALUES (1)"))
    engine.dispose()
    runtime.stop()
    runtime = Runtime(settings)
    engine = owner_engine(runtime.start().database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM keepme")).scalar() == 1
    engine.dispose()
    runtime.stop()


@pytest.mark.slow
def test_sigkilled_owner_leaves_no_orphans(tmp_path):
    """The reaper stops embedded servers when their owner dies without cleanup."""
    script = (
        "import time, sys\n"
        "from backend.runtime import Runtime\n"
        "from tests.conftest import make_settings\n"
        "from pathlib import Path\n"
        f"rt = Runtime(make_settings(Path({str(tmp_path)!r})))\n"
        "rt.start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    assert proc.stdout.readline().strip() == "ready"
    registry = ServiceRegistry(tmp_path / "run")
    pg_pid, kafka_pid = registry.read("postgres").pid, registry.read("kafka").pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_dead(kafka_pid), "tansu left running"
    assert _wait_dead(pg_pid), "postgres left running"


@pytest.mark.slow
def test_two_processes_share_one_server(tmp_path):
    settings = make_settings(tmp_path)
    first, second = Runtime(settings), Runtime(settings)
    a, b = first.start(), second.start()
    assert a.kafka_bootstrap_servers == b.kafka_bootstrap_servers
    registry = ServiceRegistry(settings.run_dir)
    kafka_pid = registry.read("kafka").pid
    # Same pid owns both handles here, so release by one keeps nothing alive for the other;
    # the cross-process case is what the registry's user list is for.
    record = registry.read("kafka")
    record.users.append(os.getppid())  # a live foreign process still using it
    registry.write(record)
    first.stop()
    assert _alive(kafka_pid)
    record = registry.read("kafka")
    record.users = []
    registry.write(record)
    second.endpoints = b
    second.stop()
    assert _wait_dead(kafka_pid)


def test_external_urls_are_used_as_given(tmp_path, pg_url, kafka_bootstrap, s3_settings):
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        lake_uri=s3_settings.lake_uri,
        s3_endpoint_url=s3_settings.s3_endpoint_url,
        s3_access_key_id=s3_settings.s3_access_key_id,
        s3_secret_access_key=s3_settings.s3_secret_access_key.get_secret_value(),
    )
    runtime = Runtime(settings)
    endpoints = runtime.start()
    assert endpoints.embedded == {"postgres": False, "kafka": False, "lake": False}
    assert endpoints.database_url == pg_url
    assert endpoints.kafka_bootstrap_servers == kafka_bootstrap
    statuses = {s.name: s for s in runtime.status() if s.name != "spark"}
    assert all(s.healthy and s.mode == "external" for s in statuses.values()), statuses
    assert "testing-secret" not in str(statuses)
    assert not Path(settings.run_dir / "postgres.json").exists()
    runtime.stop()


def test_spark_session_runs_and_is_utc(spark):
    row = spark.sql("SELECT current_timezone() AS tz, sum(id) AS s FROM range(10)").collect()[0]
    assert row.tz == "UTC" and row.s == 45


def test_an_unreachable_broker_is_reported_within_the_probe_timeout(tmp_path, pg_url):
    """A down broker makes the Kafka status (and the Pipeline page's lag) fail fast, not after kafka-python's
    30 s bootstrap wait; the bound here is loose on purpose (a regression to 30 s, not a timing benchmark)."""
    import socket

    from kafka.errors import KafkaError

    from backend.ingest.monitor import consumer_lag
    from backend.lake import Lake

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(
        tmp_path, database_url=pg_url, kafka_bootstrap_servers=f"127.0.0.1:{port}", kafka_probe_timeout_ms=500
    )
    runtime = Runtime(settings)
    endpoints = runtime.start(spark=False)
    try:
        started = time.monotonic()
        kafka = next(s for s in runtime.status() if s.name == "kafka")
        assert not kafka.healthy and kafka.mode == "external"
        with pytest.raises(KafkaError):
            consumer_lag(settings, Lake(endpoints.lake), probe=True)
        assert time.monotonic() - started < 15
    finally:
        runtime.stop()
