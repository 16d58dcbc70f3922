"""The app started with exactly the environment docker-compose.yml gives it, on the test servers: all external, all healthy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.config import REPO_ROOT, Settings
from backend.mart.db import owner_engine
from tests.deploy.composefile import DOCKERFILE, environment, load_raw
from tests.deploy.conftest import ENV_ONLY_SETTINGS_PRELUDE, LocalStack, app_process_env, server_major

pytestmark = pytest.mark.slow


def _env_only_settings(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings built from the app's compose environment alone (no .env, no secrets.toml, nothing inherited)."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in stack.app_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(
        Settings,
        "settings_customise_sources",
        classmethod(lambda cls, settings_cls, init_settings, env_settings, **_: (init_settings, env_settings)),
    )
    return Settings(_env_file=None)


def test_runtime_uses_every_external_service_and_all_are_healthy(local_stack: LocalStack, tmp_path: Path) -> None:
    # `python -m backend.runtime status` is the app's own Runtime(settings).start() + status(), Spark included,
    # in a fresh process whose environment is the app service's, as in the container.
    code = ENV_ONLY_SETTINGS_PRELUDE + (
        "import sys; from backend.runtime.__main__ import main; sys.exit(main(['status', '--json']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=app_process_env(local_stack, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout.strip(), f"no status printed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    rows = {row["name"]: row for row in json.loads(result.stdout[result.stdout.index("[") :])}
    assert set(rows) == {"postgres", "kafka", "lake", "spark"}
    for name in ("postgres", "kafka", "lake"):
        assert rows[name]["mode"] == "external", rows[name]
    for name, row in rows.items():
        assert row["healthy"], f"{name} unhealthy: {row['detail']}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, result.stderr[-4000:]

    assert rows["postgres"]["location"].startswith("postgresql+psycopg2://")
    assert rows["kafka"]["location"] == local_stack.app_env["KAFKA_BOOTSTRAP_SERVERS"]
    assert rows["lake"]["location"].startswith(local_stack.app_env["LAKE_URI"])
    # Status output and logs are shown to users and shipped to collectors: no secret in them.
    output = result.stdout + result.stderr
    for name in ("POSTGRES_OWNER_PASSWORD", "DATABASE_READONLY_PASSWORD", "S3_SECRET_ACCESS_KEY"):
        assert local_stack.dotenv[name] not in output, f"{name} leaked into the status output or logs"


def test_settings_from_the_compose_environment_point_at_the_local_servers(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _env_only_settings(local_stack, monkeypatch)
    assert settings.app_env == "production"  # the placeholder-secret guard is active and passed
    assert settings.database_url.startswith("postgresql+psycopg2://") and "@127.0.0.1:" in settings.database_url
    assert settings.lake_is_s3 and settings.s3_endpoint_url.startswith("http://127.0.0.1:")
    assert settings.kafka_topic_partitions == 6
    assert settings.data_dir == local_stack.data_dir


def test_owner_and_reader_roles_from_the_init_script_run_the_mart(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner the init script makes is no superuser, yet can migrate and manage the reader (PostgreSQL 16+
    rules); the reader reached through the derived read-only URL reads and cannot write."""
    from backend.mart.db import READER_ROLE, ensure_reader_role, readonly_url
    from backend.mart.migrate import upgrade

    settings = _env_only_settings(local_stack, monkeypatch)
    owner = owner_engine(settings.database_url, poolclass=sa.pool.NullPool)
    with owner.connect() as conn:
        is_super = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
        assert is_super is False
    owner.dispose()

    upgrade(settings.database_url)
    assert ensure_reader_role(settings, owner_url=settings.database_url) == READER_ROLE

    url = sa.engine.make_url(readonly_url(settings))
    assert url.username == READER_ROLE and url.password == local_stack.dotenv["DATABASE_READONLY_PASSWORD"]
    assert f"{url.host}:{url.port}" == settings.database_url.split("@", 1)[1].split("/", 1)[0]
    # The plain factory engine on the reader's URL, not reader_engine: that one forces read-only on every
    # session itself, and this checks the role's own default.
    reader = owner_engine(url, poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"
            conn.execute(sa.text("SELECT count(*) FROM mart.fact_cost_daily")).scalar()
        # The role default can be switched off by a session; the grants still refuse the write.
        with reader.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("SET default_transaction_read_only = off"))
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("CREATE TABLE mart.not_allowed (x int)"))
    finally:
        reader.dispose()


def test_compose_postgres_is_the_major_version_the_tests_run_on(pg_admin_url: str) -> None:
    postgres = load_raw()["services"]["postgres"]
    tag = postgres["image"].split(":", 1)[1]
    major = int(tag.split(".", 1)[0])
    assert major == server_major(pg_admin_url), f"compose runs {postgres['image']}, the tests another major"
    # 18+ images keep PGDATA below /var/lib/postgresql/<major>/ and refuse a mount at the old .../data.
    target = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert f"pgdata:{target}" in postgres["volumes"]
    assert "PGDATA" not in environment(postgres)


def test_image_command_serves_streamlit_and_the_healthcheck_passes(local_stack: LocalStack, tmp_path: Path) -> None:
    """The Dockerfile's CMD (on a free loopback port, not 8501) with the app's environment, probed by the
    exact healthcheck command of docker-compose.yml."""
    from backend.runtime.kafka import free_port, wait_until_listening

    port = free_port()
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])$", DOCKERFILE.read_text(), flags=re.M).group(1))
    cmd = [
        {"--server.port=8501": f"--server.port={port}", "--server.address=0.0.0.0": "--server.address=127.0.0.1"}.get(
            arg, arg
        )
        for arg in cmd
    ]
    assert cmd[:3] == ["python", "-m", "app.serve"]
    cmd = [sys.executable, *cmd[1:]]
    env = app_process_env(local_stack, tmp_path)
    # The stack is production: with sign-in neither configured nor disabled on purpose, the image refuses.
    refused = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "AUTH_DISABLED" in refused.stdout + refused.stderr
    env["AUTH_DISABLED"] = "true"  # what an operator behind their own gateway sets
    # WORKDIR /app in the image: the repository root, where .streamlit/config.toml is read from.
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_listening(f"127.0.0.1:{port}", timeout=60)
        check = load_raw()["services"]["app"]["healthcheck"]["test"]
        assert check[0] == "CMD"
        probe = [sys.executable if arg == "python" else arg.replace(":8501/", f":{port}/") for arg in check[1:]]
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert result.returncode == 0, f"{result.stderr}\n{log_path.read_text()[-4000:]}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
