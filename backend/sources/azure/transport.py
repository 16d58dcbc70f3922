"""A requests.Session that sends Azure's public host names to another base URL (the local fake), for msal and ARM."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import requests

AZURE_HOSTS = ("login.microsoftonline.com", "management.azure.com")
AZURE_HOST_SUFFIXES = (".blob.core.windows.net",)


class RoutingSession(requests.Session):
    """Rewrites https://<Azure host>/path to <base_url>/path and leaves every other URL alone.

    msal only accepts https authorities, so the connector keeps the real authority and management
    URLs and this session (msal's `http_client` and the ARM client's session) changes where the
    bytes go. Production uses a plain requests.Session; nothing else differs."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        parts = urlsplit(base_url)
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self.routed: list[str] = []

    def _route(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host in AZURE_HOSTS or host.endswith(AZURE_HOST_SUFFIXES):
            # The fake tells hosts apart by a path prefix for blobs (they share its one port).
            path = f"/_blob/{host}{parts.path}" if host.endswith(AZURE_HOST_SUFFIXES) else parts.path
            url = urlunsplit((self._scheme, self._netloc, path, parts.query, parts.fragment))
            self.routed.append(url)
        return url

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        return super().request(method, self._route(str(url)), *args, **kwargs)
