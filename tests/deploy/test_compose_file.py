"""docker-compose.yml and the Dockerfile checked offline: compose-spec schema, `docker-compose config`, and our own rules."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator, Draft201909Validator

from backend.config import REPO_ROOT, Settings
from tests.deploy.composefile import (
    COMPOSE_FILE,
    COMPOSE_SPEC_SCHEMA,
    COMPOSE_V1_SCHEMA,
    CONTAINER_KAFKA,
    CONTAINER_MINIO,
    CONTAINER_POSTGRES,
    DOCKERFILE,
    ENV_EXAMPLE,
    OPTIONAL_SECRETS,
    REQUIRED_SECRETS,
    InterpolationError,
    docker_compose_v1,
    dotenv_values,
    environment,
    interpolate,
    interpolate_text,
    load_raw,
    references,
    require_tool,
)

SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|API_KEY|TOKEN|CREDENTIAL|ROOT_USER")
LONG_RUNNING = ("postgres", "kafka", "minio", "app")
# Defaults the production stack changes on purpose: JSON lines for a log collector,
PRODUCTION_DEFAULTS = {"LOG_FORMAT": "json", "METRICS_PORT": "9464"}  # and Prometheus metrics on
ONE_SHOT = ("kafka-init", "minio-init")


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_raw()


@pytest.fixture(scope="module")
def resolved(raw: dict) -> dict:
    return interpolate(raw, dotenv_values())


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    return []


def _all_references(raw: dict) -> list:
    """Every ${VAR} in the file's values (YAML comments are not interpolated, so they do not count)."""
    return [ref for text in _strings(raw) for ref in references(text)]


def _settings_fields() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


# --- schema and docker-compose -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema_path", "validator"),
    [(COMPOSE_SPEC_SCHEMA, Draft7Validator), (COMPOSE_V1_SCHEMA, Draft201909Validator)],
    ids=["compose-spec (dclint)", "docker-compose-1.29"],
)
def test_compose_file_matches_the_compose_spec_schema(raw: dict, resolved: dict, schema_path: Path, validator) -> None:
    require_tool(schema_path.is_file(), f"compose-spec JSON schema not found at {schema_path}")
    schema = json.loads(schema_path.read_text())
    checker = validator(schema)
    for label, document in (("as written", raw), ("interpolated", resolved)):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in checker.iter_errors(document)]
        assert not errors, f"docker-compose.yml {label} violates {schema_path.name}:\n" + "\n".join(errors)
    # The schema really constrains: a misspelled healthcheck key is refused.
    broken = json.loads(json.dumps(resolved))
    broken["services"]["app"]["healthcheck"]["tset"] = broken["services"]["app"]["healthcheck"].pop("test")
    assert list(checker.iter_errors(broken))


def _docker_compose_config(dotenv: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in dotenv.items()))
    # A clean environment: nothing from this shell or a developer's .env may fill a required variable.
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_docker_compose_config_accepts_the_file_and_agrees_with_our_interpolation(tmp_path: Path) -> None:
    require_tool(docker_compose_v1() is not None, "docker-compose (Debian package docker-compose) not installed")
    dotenv = dotenv_values()
    result = _docker_compose_config(dotenv, tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    ours = interpolate(load_raw(), dotenv)
    assert set(rendered["services"]) == set(ours["services"])
    for name, service in ours["services"].items():
        theirs = {k: str(v) for k, v in environment(rendered["services"][name]).items()}
        mine = {k: str(v) for k, v in environment(service).items()}
        assert theirs == mine, f"environment of {name} differs from docker-compose's interpolation"
        assert rendered["services"][name].get("image") == service.get("image")
    assert set(rendered["volumes"]) == {"pgdata", "kafka-data", "minio-data", "app-data"}


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_docker_compose_refuses_to_start_without_each_secret(missing: str, tmp_path: Path) -> None:
    require_tool(docker_compose_v1() is not None, "docker-compose (Debian package docker-compose) not installed")
    dotenv = dotenv_values()
    del dotenv[missing]
    result = _docker_compose_config(dotenv, tmp_path)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr
    # An empty value is refused as well (`:?`, not `?`).
    result = _docker_compose_config({**dotenv, missing: ""}, tmp_path)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


# --- our own rules --------------------------------------------------------------------------------
def test_our_interpolation_refuses_each_missing_secret(raw: dict) -> None:
    for name in REQUIRED_SECRETS:
        dotenv = dotenv_values()
        del dotenv[name]
        with pytest.raises(InterpolationError, match=name):
            interpolate(raw, dotenv)


def test_every_image_is_pinned_to_a_release(resolved: dict) -> None:
    for name, service in resolved["services"].items():
        image = service["image"]
        assert "@sha256:" in image or re.search(r":[^/:]*\d[^/:]*$", image), f"{name}: {image} has no version tag"
        tag = image.rsplit(":", 1)[-1]
        assert "latest" not in tag.lower(), f"{name}: {image}"
        assert not re.fullmatch(r"\d+", tag), f"{name}: {image} names only a major version"
    from_lines = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert from_lines == ["python:3.11.14-slim-bookworm"]


def test_secrets_are_required_substitutions_never_values(raw: dict) -> None:
    for ref in _all_references(raw):
        if ref.name in REQUIRED_SECRETS:
            assert ref.op == ":?" and ref.arg, f"${{{ref.name}}} must be written ${{{ref.name}:?message}}"
        elif SECRET_NAME.search(ref.name):
            assert ref.name in OPTIONAL_SECRETS, f"${{{ref.name}}} looks secret: add it to REQUIRED_SECRETS"
            assert ref.op == ":-" and ref.arg == "", f"optional secret ${{{ref.name}}} must default to empty"
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert isinstance(value, str) and re.fullmatch(r"\$\{[^}]+\}", value), (
                    f"{name}.{key} must be exactly one ${{...}} substitution, not a value"
                )
            if isinstance(value, str) and "://" in value and "@" in value:
                # Each variable becomes a marker, so the URL's password part shows which variable fills it.
                markers = {ref.name: f"VAR{ref.name}VAR" for ref in references(value)}
                password = urlsplit(interpolate_text(value, markers)).password or ""
                assert re.fullmatch(r"VAR[A-Z_]+VAR", password), f"{name}.{key}: the password must be a variable"
                assert password[3:-3] in REQUIRED_SECRETS, f"{name}.{key}: {password[3:-3]} is not a required secret"
    # Build arguments and labels would end up in the image: no secrets there either.
    assert "args" not in raw["services"]["app"]["build"]
    assert "ARG" not in re.findall(r"^(\w+)", DOCKERFILE.read_text(), flags=re.M)


def test_app_environment_uses_settings_names_only(raw: dict) -> None:
    app_env = environment(raw["services"]["app"])
    fields = _settings_fields()
    unknown = sorted(set(app_env) - fields)
    assert not unknown, f"not Settings fields (backend/config.py): {unknown}"
    # Same names everywhere: a value that is one variable is that variable under the same name.
    for key, value in app_env.items():
        refs = references(str(value))
        if re.fullmatch(r"\$\{[^}]+\}", str(value)):
            assert refs[0].name == key, f"app.{key} reads ${{{refs[0].name}}}: use the same name"
    # Every infrastructure setting is given (an empty one would silently start an embedded server).
    for key in ("DATABASE_URL", "DATABASE_READONLY_PASSWORD", "KAFKA_BOOTSTRAP_SERVERS", "LAKE_URI", "S3_ENDPOINT_URL"):
        assert app_env.get(key), key
    assert app_env["APP_ENV"] == "production"


def test_app_environment_defaults_match_the_settings_defaults(raw: dict, tmp_path: Path, monkeypatch) -> None:
    # Two sources of one default would drift; compose's must equal what the app would use anyway.
    monkeypatch.setattr("backend.config.REPO_ROOT", tmp_path)  # no developer secrets.toml
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    baseline = Settings(_env_file=None)
    for key, value in environment(raw["services"]["app"]).items():
        refs = references(str(value))
        if len(refs) != 1 or refs[0].op != ":-" or str(value) != f"${{{refs[0].name}:-{refs[0].arg}}}":
            continue
        field = key.lower()
        if key in PRODUCTION_DEFAULTS:
            assert refs[0].arg == PRODUCTION_DEFAULTS[key], key
            continue
        if refs[0].arg == "":
            assert not getattr(baseline, field), f"{key}: empty compose default but Settings has one"
            continue
        parsed = Settings(_env_file=None, **{field: refs[0].arg})
        assert getattr(parsed, field) == getattr(baseline, field), f"{key}: compose default {refs[0].arg!r}"


def test_settings_accept_the_app_environment(resolved: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("backend.config.REPO_ROOT", tmp_path)
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in environment(resolved["services"]["app"]).items():
        monkeypatch.setenv(key, str(value))
    settings = Settings(_env_file=None)
    assert settings.app_env == "production"
    assert settings.lake_is_s3 and settings.s3_endpoint_url == CONTAINER_MINIO
    assert settings.kafka_bootstrap_servers == CONTAINER_KAFKA
    assert f"@{CONTAINER_POSTGRES}/" in settings.database_url
    assert settings.is_demo  # no Azure credentials in the test .env: the synthetic estate


def test_services_are_healthchecked_and_ordered(raw: dict) -> None:
    services = raw["services"]
    assert set(services) == set(LONG_RUNNING) | set(ONE_SHOT)
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert services[name]["restart"] == "unless-stopped"
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", f"{name} is a one-shot job and must not restart"
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec == {"condition": wanted}, f"{name} -> {dependency}"
    assert set(services["app"]["depends_on"]) == {"postgres", "kafka", "kafka-init", "minio", "minio-init"}
    assert set(services["kafka-init"]["depends_on"]) == {"kafka"}
    assert set(services["minio-init"]["depends_on"]) == {"minio"}
    app_check = " ".join(services["app"]["healthcheck"]["test"])
    assert "/_stcore/health" in app_check and ":8501" in app_check


def test_services_agree_with_each_other(resolved: dict) -> None:
    import sqlalchemy as sa

    services = resolved["services"]
    app = environment(services["app"])
    pg = environment(services["postgres"])
    url = sa.engine.make_url(app["DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port) == tuple(CONTAINER_POSTGRES.split(":")[:1]) + (int(CONTAINER_POSTGRES.split(":")[1]),)
    assert url.username == pg["POSTGRES_OWNER_USER"] and url.password == pg["POSTGRES_OWNER_PASSWORD"]
    assert url.database == pg["POSTGRES_DB"]
    assert url.username != pg["POSTGRES_USER"], "the app must not run as the Postgres superuser"
    assert app["DATABASE_READONLY_PASSWORD"] == pg["DATABASE_READONLY_PASSWORD"]

    kafka_init = environment(services["kafka-init"])
    assert app["KAFKA_BOOTSTRAP_SERVERS"] == kafka_init["BOOTSTRAP_SERVERS"] == CONTAINER_KAFKA
    assert (app["KAFKA_TOPIC_COSTS"], app["KAFKA_TOPIC_PARTITIONS"]) == (kafka_init["TOPIC"], kafka_init["PARTITIONS"])
    assert int(app["KAFKA_TOPIC_PARTITIONS"]) > 1
    kafka = environment(services["kafka"])
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{CONTAINER_KAFKA}"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller" and kafka["CLUSTER_ID"]

    minio_init = environment(services["minio-init"])
    assert app["S3_ENDPOINT_URL"] == minio_init["MINIO_URL"] == CONTAINER_MINIO
    assert app["LAKE_URI"].startswith(f"s3://{minio_init['LAKE_BUCKET']}/")
    assert (app["S3_ACCESS_KEY_ID"], app["S3_SECRET_ACCESS_KEY"]) == (
        minio_init["S3_ACCESS_KEY_ID"],
        minio_init["S3_SECRET_ACCESS_KEY"],
    )
    assert app["S3_ACCESS_KEY_ID"] != minio_init["MINIO_ROOT_USER"], "the app gets its own MinIO user"


def test_nothing_reaches_outside_the_project(raw: dict) -> None:
    for name, service in raw["services"].items():
        assert "container_name" not in service, f"{name}: fixed names collide with other projects"
        assert not service.get("privileged") and "network_mode" not in service, name
        for volume in service.get("volumes") or []:
            assert "docker.sock" not in str(volume), name
            source = str(volume).split(":", 1)[0]
            # Bind mounts only of this repository's own files, read-only; everything else is a named volume.
            if source.startswith((".", "/")):
                assert source.startswith("./docker/") and str(volume).endswith(":ro"), f"{name}: {volume}"
                assert (REPO_ROOT / source).exists(), f"{name}: {source} missing"
        if name != "app":
            assert "ports" not in service, f"{name} must be reachable inside the compose network only"
    assert raw["services"]["app"]["ports"] == [
        "${COSTLAKE_BIND:-127.0.0.1}:${COSTLAKE_PORT:-8501}:8501",
        "${COSTLAKE_METRICS_BIND:-127.0.0.1}:${COSTLAKE_METRICS_PORT:-9464}:${METRICS_PORT:-9464}",
    ]
    destructive = re.compile(r"docker\s+(rm|rmi|kill|system\s+prune|volume\s+(rm|prune)|container\s+prune)|down\s+-v")
    for path in [COMPOSE_FILE, DOCKERFILE, *sorted((REPO_ROOT / "docker").rglob("*"))]:
        if path.is_file():
            assert not destructive.search(path.read_text()), f"{path} deletes containers or volumes"


def test_init_scripts_are_valid_and_use_only_what_their_service_provides(raw: dict) -> None:
    image_provided = {"postgres": {"POSTGRES_USER", "POSTGRES_DB"}, "minio-init": set(), "kafka-init": set()}
    for name, service in raw["services"].items():
        provided = set(environment(service)) | image_provided.get(name, set())
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith("./docker/"):
                continue
            root = REPO_ROOT / source
            scripts = sorted(root.glob("*.sh")) if root.is_dir() else [root]
            assert scripts, f"{name}: {source} holds no script"
            for script in scripts:
                assert script.stat().st_mode & stat.S_IXUSR, f"{script} must be executable"
                shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
                check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
                assert check.returncode == 0, check.stderr
                text = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
                assert re.search(r"^set -e", text, flags=re.M), f"{script} must stop at the first error"
                local = set(re.findall(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=", text, flags=re.M))
                used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text)) - local
                assert used <= provided, f"{script.name} uses {sorted(used - provided)} that {name} does not set"


def test_postgres_init_creates_the_reader_the_mart_expects() -> None:
    from backend.mart.db import READER_ROLE

    script = (REPO_ROOT / "docker" / "postgres" / "initdb" / "10-costlake-roles.sh").read_text()
    assert re.search(rf"^reader={READER_ROLE}$", script, flags=re.M)


def test_dockerfile_builds_a_non_root_streamlit_image_with_java_17() -> None:
    text = DOCKERFILE.read_text()
    assert "openjdk-17-jre-headless" in text
    assert "pip install -r requirements.txt -c constraints.txt" in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the app must not run as root"
    assert re.search(r"^HEALTHCHECK .*\n?.*/_stcore/health", text, flags=re.M)
    cmd = re.search(r"^CMD\s+(\[.*\])$", text, flags=re.M)
    assert cmd, "CMD in exec form"
    argv = json.loads(cmd.group(1))
    assert argv[:3] == ["python", "-m", "app.serve"] and "--server.port=8501" in argv
    assert (REPO_ROOT / "app" / "main.py").is_file()
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["port"] == 8501 and config["server"]["headless"] is True


def test_dockerignore_keeps_secrets_and_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".env", ".streamlit/secrets.toml", "data/", ".venv/", ".git/"):
        assert entry in ignored, entry
    for needed in ("requirements.txt", "constraints.txt", "backend/", "app/", "pages/", ".streamlit/"):
        assert needed not in ignored, needed


def test_env_example_lists_every_variable_and_sets_no_secret() -> None:
    text = ENV_EXAMPLE.read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    used = {ref.name for ref in _all_references(load_raw())}
    assert used <= listed, f"not in {ENV_EXAMPLE.name}: {sorted(used - listed)}"
    for name in REQUIRED_SECRETS:
        assert re.search(rf"^{name}=$", text, flags=re.M), f"{name} must be listed empty, uncommented"
    for name in OPTIONAL_SECRETS:
        assert re.search(rf"^# {name}=$", text, flags=re.M), name
