"""Azure Cost Management: the msal-authenticated connector (Query API, Cost Details); its local stand-in is backend.demo.fake_azure."""

from backend.sources.azure.client import (
    ArmClient,
    AzureAuthError,
    AzureError,
    AzureRequestError,
    AzureThrottledError,
    RetryPolicy,
)
from backend.sources.azure.source import AzureCostSource, Window, open_window_start, plan_windows
from backend.sources.azure.transport import RoutingSession

__all__ = [
    "ArmClient",
    "AzureAuthError",
    "AzureCostSource",
    "AzureError",
    "AzureRequestError",
    "AzureThrottledError",
    "RetryPolicy",
    "RoutingSession",
    "Window",
    "open_window_start",
    "plan_windows",
]
