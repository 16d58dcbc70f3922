"""Sign-in configuration: the production refusal, the cookie secret's checks, the generated secrets file, expiry."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib

import pytest
from pydantic import ValidationError

from app.serve import auth_flags
from backend.auth.oidc import (
    DISABLED,
    LAPTOP,
    OIDC,
    AuthNotConfiguredError,
    auth_mode,
    check_startup,
    session_expired,
    write_secrets_file,
)
from backend.config import REPO_ROOT
from tests.conftest import make_settings

COOKIE = "k3P9vQ2xW7mZ1rT8yL4nB6cF0hJ5sD2a"  # 32 characters, not a placeholder
OIDC_SETTINGS = {
    "auth_provider_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    "auth_client_id": "costlake",
    "auth_client_secret": "a-client-secret-of-the-test",
    "auth_redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "auth_cookie_secret": COOKIE,
}


@pytest.fixture
def no_secrets_toml(tmp_path):
    return tmp_path / "absent-secrets.toml"


def test_laptop_mode_without_settings_and_production_refuses_to_start_without_sign_in(tmp_path, no_secrets_toml):
    laptop = make_settings(tmp_path, app_env="development")
    assert auth_mode(laptop, secrets_path=no_secrets_toml).mode == LAPTOP
    assert check_startup(laptop, secrets_path=no_secrets_toml).mode == LAPTOP
    production = make_settings(tmp_path, app_env="production")
    with pytest.raises(AuthNotConfiguredError, match="APP_ENV=production needs sign-in.*AUTH_DISABLED=true"):
        check_startup(production, secrets_path=no_secrets_toml)
    disabled = make_settings(tmp_path, app_env="production", auth_disabled=True)
    assert check_startup(disabled, secrets_path=no_secrets_toml).mode == DISABLED
    configured = make_settings(tmp_path, app_env="production", **OIDC_SETTINGS)
    assert check_startup(configured, secrets_path=no_secrets_toml).mode == OIDC


def test_an_auth_section_in_secrets_toml_counts_as_sign_in(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nredirect_uri = "x"\n\n[auth.microsoft]\nclient_id = "abc"\n')
    mode = check_startup(make_settings(tmp_path, app_env="production"), secrets_path=secrets)
    assert mode.mode == OIDC and "secrets.toml" in mode.source
    secrets.write_text('[auth]\nredirect_uri = "x"\n')  # no provider: not sign-in
    assert auth_mode(make_settings(tmp_path), secrets_path=secrets).mode == LAPTOP


@pytest.mark.parametrize(
    ("cookie", "message"),
    [(None, "AUTH_COOKIE_SECRET"), ("changeme", "AUTH_COOKIE_SECRET"), ("short-but-random-7Hq", "32\\+ characters")],
)
def test_a_missing_placeholder_or_short_cookie_secret_is_refused_outside_development(tmp_path, cookie, message):
    values = {**OIDC_SETTINGS, "auth_cookie_secret": cookie}
    with pytest.raises(ValidationError, match=message):
        make_settings(tmp_path, app_env="production", **values)
    # Development accepts a short one (a laptop trying out a provider), but never none at all.
    if cookie:
        make_settings(tmp_path, app_env="development", **values)
    else:
        with pytest.raises(AuthNotConfiguredError, match="AUTH_COOKIE_SECRET"):
            check_startup(make_settings(tmp_path, app_env="development", **values))


def test_placeholder_client_secret_and_bad_redirect_uri_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="AUTH_CLIENT_SECRET is a placeholder"):
        make_settings(tmp_path, app_env="production", **{**OIDC_SETTINGS, "auth_client_secret": "secret"})
    settings = make_settings(tmp_path, **{**OIDC_SETTINGS, "auth_redirect_uri": "http://127.0.0.1:8501/"})
    with pytest.raises(AuthNotConfiguredError, match="/oauth2callback"):
        check_startup(settings)


def test_the_generated_secrets_file_is_private_and_is_what_st_login_reads(tmp_path):
    settings = make_settings(tmp_path, **OIDC_SETTINGS, auth_scopes="openid email profile groups", auth_prompt="login")
    path = write_secrets_file(settings)
    assert path.parent == settings.run_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auth = tomllib.loads(path.read_text())["auth"]
    assert auth == {
        "redirect_uri": OIDC_SETTINGS["auth_redirect_uri"],
        "cookie_secret": COOKIE,
        "client_id": "costlake",
        "client_secret": OIDC_SETTINGS["auth_client_secret"],
        "server_metadata_url": OIDC_SETTINGS["auth_provider_metadata_url"],
        "client_kwargs": {"scope": "openid email profile groups", "prompt": "login"},
    }
    flags = auth_flags(settings)
    assert flags[-1] == f"--secrets.files={path}"  # last: the AUTH_* settings win over other secrets files
    assert auth_flags(make_settings(tmp_path)) == []  # laptop mode: Streamlit's own secrets handling


def test_a_session_older_than_the_limit_or_without_a_time_is_expired():
    now = 1_800_000_000.0
    assert not session_expired({"iat": now - 3600}, 12, now=now)
    assert session_expired({"iat": now - 13 * 3600}, 12, now=now)
    # auth_time (when the user authenticated at the provider) wins over the token's issue time.
    assert session_expired({"iat": now - 60, "auth_time": now - 13 * 3600}, 12, now=now)
    assert session_expired({"email": "x@example.com"}, 12, now=now)
    assert session_expired({"iat": True}, 12, now=now)  # not a time


def test_the_launcher_refuses_a_production_start_without_sign_in(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "APP_ENV", "DATA_DIR", "DATABASE_URL"))}
    env.update({"APP_ENV": "production", "DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)})
    result = subprocess.run(
        [sys.executable, "-m", "app.serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "APP_ENV=production needs sign-in" in result.stderr + result.stdout
    assert not (tmp_path / "pg").exists()  # refused before any service started
