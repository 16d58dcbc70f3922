"""Reads docker-compose.yml the way Docker Compose does: YAML plus `${VAR}` interpolation from a .env mapping."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.config import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / "docker" / "env.production.example"

# Where tests/deploy/install-tools.sh puts the compose-spec schema (from the npm package dclint).
COMPOSE_SPEC_SCHEMA = Path(
    os.environ.get("COMPOSE_SPEC_SCHEMA", "/usr/local/share/costlake/compose-spec/compose.schema.json")
)
# The (older) schema Debian's docker-compose 1.29 validates with; it comes with that package.
COMPOSE_V1_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")

# Secrets the stack cannot run without: compose must refuse to start while any of them is unset or empty.
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "POSTGRES_OWNER_PASSWORD",
    "DATABASE_READONLY_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
)
# Secrets of optional integrations: empty means "not configured" (demo estate, no agent), never a default value.
OPTIONAL_SECRETS = ("AZURE_CLIENT_SECRET", "LLM_API_KEY")

# The hosts and ports services reach each other by inside the compose network.
CONTAINER_POSTGRES = "postgres:5432"
CONTAINER_KAFKA = "kafka:9092"
CONTAINER_MINIO = "http://minio:9000"

_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class InterpolationError(ValueError):
    """A required variable is missing, as `docker compose` would report it."""


@dataclass(frozen=True)
class Reference:
    """One `${NAME<op><arg>}` in the compose file."""

    name: str
    op: str | None
    arg: str


def references(text: str) -> list[Reference]:
    """Every variable reference in `text` (escaped `$$` excluded)."""
    found = []
    for match in _REFERENCE.finditer(text):
        if match.group("escaped"):
            continue
        if match.group("named"):
            found.append(Reference(match.group("named"), None, ""))
            continue
        braced = _BRACED.match(match.group("braced"))
        if braced is None:
            raise InterpolationError(f"invalid interpolation: ${{{match.group('braced')}}}")
        found.append(Reference(braced.group("name"), braced.group("op"), braced.group("arg") or ""))
    return found


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution rules for one string: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        braced = _BRACED.match(match.group("braced"))
        if braced is None:
            raise InterpolationError(f"invalid interpolation: ${{{match.group('braced')}}}")
        name, op, arg = braced.group("name"), braced.group("op"), braced.group("arg") or ""
        value = env.get(name)
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":?":
            if not value:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op == "?":
            if value is None:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        return arg if value is not None else ""  # "+"

    return _REFERENCE.sub(substitute, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value of a parsed compose document (keys are left alone, as compose does)."""
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def load_raw() -> dict[str, Any]:
    """docker-compose.yml as written, before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    """A service's `environment`, whether written as a mapping or as a list of KEY=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def dotenv_values(**overrides: str) -> dict[str, str]:
    """A complete .env for the stack: every required secret set (distinct, URL-safe), nothing else."""
    values = {name: f"{name.lower().replace('_', '')}{os.urandom(8).hex()}" for name in REQUIRED_SECRETS}
    values.update(overrides)
    return values


def require_tool(available: bool, reason: str) -> None:
    """Skip on a developer machine without the tool; fail in CI, which must really run these checks."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — CI must provide it: run tests/deploy/install-tools.sh in .ci/run")
    pytest.skip(f"{reason} (install with: sudo bash tests/deploy/install-tools.sh)")


def docker_compose_v1() -> str | None:
    return shutil.which("docker-compose")
