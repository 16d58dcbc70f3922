"""Sign-in configuration: laptop mode or OIDC, the start-up refusal, Streamlit's [auth] secrets, session age."""

from __future__ import annotations

import json
import logging
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.config import REPO_ROOT, AppEnv, Settings

log = logging.getLogger(__name__)

LAPTOP, OIDC, DISABLED = "laptop", "oidc", "disabled"
SECRETS_FILE_NAME = "auth-secrets.toml"


class AuthNotConfiguredError(RuntimeError):
    """A production start with no sign-in configured and AUTH_DISABLED not set."""


@dataclass(frozen=True)
class AuthMode:
    mode: str  # laptop (no sign-in configured), oidc, disabled (production without sign-in, on purpose)
    source: str  # "AUTH_* settings", ".streamlit/secrets.toml [auth]" or ""

    @property
    def signs_in(self) -> bool:
        return self.mode == OIDC


def secrets_toml_auth(path: Path | None = None) -> dict[str, Any] | None:
    """The [auth] section of the project's .streamlit/secrets.toml, when it configures a provider."""
    path = path or REPO_ROOT / ".streamlit" / "secrets.toml"
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        section = tomllib.load(fh).get("auth")
    if not isinstance(section, dict):
        return None
    providers = [v for v in section.values() if isinstance(v, dict)] + [section]
    return section if any("client_id" in p for p in providers) else None


def auth_mode(settings: Settings, *, secrets_path: Path | None = None) -> AuthMode:
    if settings.auth_configured:
        return AuthMode(OIDC, "AUTH_* settings")
    if secrets_toml_auth(secrets_path) is not None:
        return AuthMode(OIDC, ".streamlit/secrets.toml [auth]")
    if settings.auth_disabled:
        return AuthMode(DISABLED, "")
    return AuthMode(LAPTOP, "")


def check_startup(settings: Settings, *, secrets_path: Path | None = None) -> AuthMode:
    """Refuse a production start that would let anyone who reaches the port do anything."""
    mode = auth_mode(settings, secrets_path=secrets_path)
    if settings.app_env == AppEnv.production and mode.mode == LAPTOP:
        raise AuthNotConfiguredError(
            "APP_ENV=production needs sign-in: set AUTH_PROVIDER_METADATA_URL, AUTH_CLIENT_ID, AUTH_CLIENT_SECRET, "
            "AUTH_REDIRECT_URI and AUTH_COOKIE_SECRET (or an [auth] section in .streamlit/secrets.toml), or set "
            "AUTH_DISABLED=true if only trusted people can reach the port"
        )
    if settings.auth_configured:
        if not settings.auth_redirect_uri.endswith("/oauth2callback"):
            raise AuthNotConfiguredError("AUTH_REDIRECT_URI must be the app's address ending in /oauth2callback")
        if settings.auth_cookie_secret is None or not settings.auth_cookie_secret.get_secret_value().strip():
            raise AuthNotConfiguredError("sign-in needs AUTH_COOKIE_SECRET (it signs the login cookie)")
    return mode


def streamlit_auth_section(settings: Settings) -> dict[str, Any]:
    """The [auth] section st.login reads, from the AUTH_* settings (one default provider)."""
    cookie = settings.auth_cookie_secret.get_secret_value() if settings.auth_cookie_secret else ""
    section: dict[str, Any] = {
        "redirect_uri": settings.auth_redirect_uri,
        "cookie_secret": cookie,
        "client_id": settings.auth_client_id,
        "server_metadata_url": settings.auth_provider_metadata_url,
        "client_kwargs": {"scope": settings.auth_scopes, "prompt": settings.auth_prompt},
    }
    if settings.auth_client_secret is not None:
        section["client_secret"] = settings.auth_client_secret.get_secret_value()
    return section


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        # TOML basic strings share JSON's escapes for what a URL or secret can hold.
        return json.dumps(value)
    raise TypeError(f"unsupported value in the [auth] section: {type(value).__name__}")


def render_secrets(section: Mapping[str, Any]) -> str:
    lines = ["# Written by app.serve from the AUTH_* settings at each start; never edit or commit.", "[auth]"]
    nested = {k: v for k, v in section.items() if isinstance(v, Mapping)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in section.items() if k not in nested]
    for key, table in nested.items():
        lines.append(f"\n[auth.{key}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_secrets_file(settings: Settings) -> Path:
    """The generated secrets file under DATA_DIR/run, readable by this user only; its content is never logged."""
    folder = settings.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SECRETS_FILE_NAME
    part = folder / f".{SECRETS_FILE_NAME}.{os.getpid()}.part"
    # Created 0600 before anything is written, so the secret is never readable by others, not even briefly.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render_secrets(streamlit_auth_section(settings)))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    log.info("sign-in configured from the AUTH_* settings (provider %s)", settings.auth_provider_metadata_url)
    return target


def streamlit_secrets_files(settings: Settings, generated: Path) -> list[str]:
    """secrets.files for Streamlit: the usual places first, the generated file last so AUTH_* win."""
    usual = [Path.home() / ".streamlit" / "secrets.toml", REPO_ROOT / ".streamlit" / "secrets.toml"]
    return [*(str(p) for p in usual if p.is_file()), str(generated)]


def session_started(claims: Mapping[str, Any]) -> float | None:
    """When the user signed in at the provider (auth_time), else when the ID token was issued (iat)."""
    for key in ("auth_time", "iat"):
        value = claims.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def session_expired(claims: Mapping[str, Any], max_hours: float, *, now: float | None = None) -> bool:
    """Streamlit's login cookie lasts 30 days; past max_hours from sign-in the user signs in again.
    A token without iat or auth_time cannot show its age, so it counts as expired."""
    started = session_started(claims)
    if started is None:
        return True
    return (time.time() if now is None else now) - started > max_hours * 3600
