"""Sources & settings says what state the Azure source is in: not configured, configured, or the setting to fix."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.ui.conftest import page, texts

pytestmark = pytest.mark.timeout(300)
SECRET = "s3cret-value"
CREDENTIALS = {"azure_tenant_id": "tenant-1", "azure_client_id": "client-1", "azure_client_secret": SecretStr(SECRET)}


@pytest.mark.parametrize(
    ("update", "shown", "error"),
    [
        (
            {"demo_mode": False},
            "Azure source not configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and "
            "AZURE_SUBSCRIPTION_IDS",
            None,
        ),
        (
            {"demo_mode": False, **CREDENTIALS, "azure_subscription_ids": ["sub-a", "sub-b"]},
            "Azure source configured (2 subscriptions)",
            None,
        ),
        ({"demo_mode": False, **CREDENTIALS}, None, "Azure source misconfigured: set AZURE_SUBSCRIPTION_IDS"),
    ],
)
def test_sources_page_shows_the_azure_source_state_without_the_secret(app_runtime, update, shown, error):
    # The page reads the runtime's settings: give it the deployment under test (servers unchanged).
    app_runtime.settings = app_runtime.settings.model_copy(update=update)
    at = page("sources").run()
    assert not at.exception
    body = texts(at)
    errors = [e.value for e in at.error]
    if error is None:
        assert errors == [] and shown in body
    else:
        assert len(errors) == 1 and errors[0].startswith(error) and "Runs fail at ingest" in errors[0]
    # A file-only deployment is told so; demo mode is not claimed when it is off.
    assert ("Runs import the files in the inbox only" in body) == ("azure_tenant_id" not in update)
    assert "Demo mode" not in body
    assert SECRET not in body and SECRET not in " ".join(errors)


def test_credential_check_names_the_missing_setting_before_asking_azure(ui_settings):
    from app.uploads import azure_credential_check
    from tests.auth.principals import ADMIN

    ok, message = azure_credential_check(ui_settings.model_copy(update={"azure_tenant_id": "tenant-1"}), actor=ADMIN)
    assert not ok and message.startswith(
        "Azure is misconfigured: set AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_SUBSCRIPTION_IDS"
    )
    ok, message = azure_credential_check(ui_settings, actor=ADMIN)
    assert not ok and message.startswith("Azure is not configured: set AZURE_TENANT_ID")
