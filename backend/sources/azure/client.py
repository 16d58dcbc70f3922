"""Azure Resource Manager HTTP client: msal client-credentials tokens, throttling-aware retries, one token refresh.

The same code talks to Azure and to the local fake: production passes a plain `requests.Session`,
tests and the demo pass a `RoutingSession` (transport.py) that sends Azure's host names to the fake,
because msal refuses non-https authorities and the authority must stay the real one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msal
import requests

from backend.config import Settings

log = logging.getLogger(__name__)

ARM_SCOPE = "https://management.azure.com/.default"
QPU_RETRY_AFTER = "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after"

# What to check for the AADSTS codes people actually hit with a service principal.
AADSTS_HINTS = {
    7000215: "AZURE_CLIENT_SECRET is wrong: use the secret's Value (not its Secret ID) from the app registration",
    7000222: "AZURE_CLIENT_SECRET has expired: create a new client secret in the app registration",
    700016: "AZURE_CLIENT_ID is not an application in tenant AZURE_TENANT_ID: check both ids",
    90002: "AZURE_TENANT_ID does not exist: check the directory (tenant) id",
    900023: "AZURE_TENANT_ID is not a valid tenant id or domain",
    700024: "the client assertion is not valid: check the credential configured for AZURE_CLIENT_ID",
}


class AzureError(RuntimeError):
    """Base of the connector's errors; messages say what failed and what to check."""


class AzureAuthError(AzureError):
    """The token endpoint refused the credentials, or ARM refused the token twice."""


class AzureRequestError(AzureError):
    """ARM answered with a client error (bad query, no access): retrying will not help."""

    def __init__(self, message: str, *, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AzureThrottledError(AzureError):
    """Throttling or server errors outlasted the retry budget."""


@dataclass
class RetryPolicy:
    """Bounded retries: at most `max_attempts` tries per request and `max_total_wait` seconds of waiting."""

    max_attempts: int = 8
    max_total_wait: float = 300.0
    backoff_base: float = 2.0
    backoff_cap: float = 60.0
    max_server_wait: float = 120.0  # a retry-after longer than this is capped (and counts against the budget)


@dataclass
class CallStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    token_refreshes: int = 0
    waited_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)


def aadsts_message(result: dict[str, Any], *, tenant_id: str, client_id: str) -> str:
    codes = result.get("error_codes") or []
    description = str(result.get("error_description", "")).split("\r\n")[0]
    hints = [AADSTS_HINTS[c] for c in codes if c in AADSTS_HINTS]
    code_text = ", ".join(f"AADSTS{c}" for c in codes) or "no AADSTS code"
    hint = hints[0] if hints else "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
    return (
        f"Azure AD refused the client credentials for app {client_id} in tenant {tenant_id}: "
        f"{result.get('error', 'error')} ({code_text}): {description}. What to check: {hint}."
    )


class TokenProvider:
    """msal ConfidentialClientApplication with its token cache; `token()` serves the cached token until it
    expires, `refresh()` drops cached access tokens so the next `token()` asks Azure AD again."""

    def __init__(self, settings: Settings, *, session: requests.Session) -> None:
        if not settings.azure_configured:
            raise AzureAuthError(
                "Azure is not configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET "
                "(or run in demo mode)"
            )
        self.tenant_id = settings.azure_tenant_id
        self.client_id = settings.azure_client_id
        self.cache = msal.TokenCache()
        secret = settings.azure_client_secret.get_secret_value() if settings.azure_client_secret else ""
        self.app = msal.ConfidentialClientApplication(
            self.client_id,
            client_credential=secret,
            authority=f"{settings.azure_authority_host.rstrip('/')}/{self.tenant_id}",
            token_cache=self.cache,
            http_client=session,
        )

    def token(self) -> str:
        result = self.app.acquire_token_for_client(scopes=[ARM_SCOPE])
        if "access_token" not in result:
            raise AzureAuthError(aadsts_message(result, tenant_id=self.tenant_id, client_id=self.client_id))
        if result.get("token_source") == "identity_provider":
            log.info("azure: new access token for app %s (expires in %ss)", self.client_id, result.get("expires_in"))
        return result["access_token"]

    def refresh(self) -> None:
        # list(): removing while msal's search generator iterates its dict would fail.
        for entry in list(self.cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            self.cache.remove_at(entry)


class ArmClient:
    """Authenticated calls to Azure Resource Manager with Cost Management's throttling rules."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 120.0,
    ) -> None:
        self.session = session or requests.Session()
        self.tokens = TokenProvider(settings, session=self.session)
        self.base_url = settings.azure_management_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.timeout = timeout
        self.stats = CallStats()

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def request(self, method: str, url: str, *, json_body: Any = None, authenticated: bool = True) -> requests.Response:
        """One logical call: retries 429 and 5xx within the policy, refreshes an expired token once,
        raises AzureRequestError for other 4xx. Returns the final 2xx response."""
        refreshed = False
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": "application/json"}
            if authenticated:
                headers["Authorization"] = f"Bearer {self.tokens.token()}"
            self.stats.requests += 1
            response = self.session.request(method, url, json=json_body, headers=headers, timeout=self.timeout)
            status = response.status_code
            if status < 400:
                return response
            if status == 401 and authenticated and not refreshed:
                # An access token can expire (or be revoked) between msal's cache check and the call.
                log.info(
                    "azure: %s %s answered 401 (%s); refreshing the token once", method, url, _error_code(response)
                )
                self.tokens.refresh()
                self.stats.token_refreshes += 1
                refreshed = True
                attempt -= 1
                continue
            if status == 401 or status == 403:
                raise AzureAuthError(
                    f"Azure refused {method} {_redact(url)} with {status} {_error_code(response)}: {_error_text(response)}. "
                    "Check that the app registration has the Cost Management Reader role on the subscription."
                )
            if status == 429 or status >= 500:
                wait = self._wait_for(response, attempt)
                self.stats.throttled += status == 429
                self.stats.server_errors += status >= 500
                if attempt >= self.policy.max_attempts or waited + wait > self.policy.max_total_wait:
                    raise AzureThrottledError(
                        f"{method} {_redact(url)} still answered {status} after {attempt} attempts and "
                        f"{waited:.0f}s of waiting (budget {self.policy.max_total_wait:.0f}s): "
                        f"{_error_text(response)}. Try again later or query fewer subscriptions per run."
                    )
                log.warning("azure: %s %s answered %d; retry %d in %.1fs", method, _redact(url), status, attempt, wait)
                self.stats.retries += 1
                self.stats.waits.append(wait)
                self.stats.waited_seconds += wait
                waited += wait
                self.sleep(wait)
                continue
            raise AzureRequestError(
                f"Azure refused {method} {_redact(url)} with {status} {_error_code(response)}: {_error_text(response)}",
                status=status,
                code=_error_code(response),
            )

    def _wait_for(self, response: requests.Response, attempt: int) -> float:
        """Cost Management's own QPU header first, then Retry-After, then bounded exponential backoff."""
        for header in (QPU_RETRY_AFTER, "Retry-After", "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after"):
            value = response.headers.get(header)
            if value:
                try:
                    return min(max(float(value), 0.0), self.policy.max_server_wait)
                except ValueError:
                    log.warning("azure: unreadable %s header %r; backing off instead", header, value)
        backoff = min(self.policy.backoff_base * 2 ** (attempt - 1), self.policy.backoff_cap)
        return backoff * (0.5 + random.random() / 2)  # jitter, so parallel runs do not retry in lockstep


def _error_code(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error.get("code", "")) if isinstance(error, dict) else ""


def _error_text(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:500]
    return str(doc)[:300]


def _redact(url: str) -> str:
    # Blob links carry SAS signatures; never log them.
    return url.split("?", 1)[0] if "sig=" in url else url
