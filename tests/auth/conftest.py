"""A real OpenID Connect provider for the sign-in tests: oidc-provider (npm) on 127.0.0.1, installed on first use."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IDP_DIR = Path(__file__).resolve().parent / "idp"
CLIENT_ID = "costlake-test"


@dataclass(frozen=True)
class Idp:
    issuer: str
    metadata_url: str
    client_id: str
    client_secret: str
    redirect_uri: str
    log: Path


def _free_port() -> int:
    from backend.runtime.kafka import free_port

    return free_port()


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    message = "needs Node.js 20+ and npm (apt-get install nodejs npm) for the test identity provider"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI must run the sign-in tests, not skip them
    pytest.skip(message)


def _install(npm: str) -> None:
    """npm ci into tests/auth/idp (the lock file pins oidc-provider and its dependencies) unless installed."""
    if (IDP_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=IDP_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in {IDP_DIR} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


@pytest.fixture(scope="session")
def app_port() -> int:
    """The port of the app under test: the provider's registered redirect URI needs it before either starts."""
    return _free_port()


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory, app_port: int) -> Iterator[Idp]:
    node, npm = _tools()
    _install(npm)
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    idp = Idp(
        issuer=issuer,
        metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_id=CLIENT_ID,
        client_secret=secrets.token_urlsafe(24),
        redirect_uri=f"http://127.0.0.1:{app_port}/oauth2callback",
        log=tmp_path_factory.mktemp("idp") / "idp.log",
    )
    env = {
        **os.environ,
        "NODE_ENV": "development",  # plain http on 127.0.0.1 is for development only
        "IDP_PORT": str(port),
        "IDP_CLIENT_ID": idp.client_id,
        "IDP_CLIENT_SECRET": idp.client_secret,
        "IDP_REDIRECT_URI": idp.redirect_uri,
    }
    with idp.log.open("wb") as log:
        proc = subprocess.Popen(
            [node, "provider.js"], cwd=IDP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(idp.metadata_url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"the test identity provider did not start:\n{idp.log.read_text()[-3000:]}")
                    time.sleep(0.3)
            yield idp
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
