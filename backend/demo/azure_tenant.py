"""Demo mode's Azure: FakeAzure over the synthetic estate plus the settings and session that point the real connector at it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import SecretStr

from backend.config import Settings
from backend.demo.estate import Estate
from backend.demo.fake_azure import FakeAzure
from backend.sources.azure.transport import RoutingSession

log = logging.getLogger(__name__)


@dataclass
class DemoAzure:
    """A running fake and what AzureCostSource needs to use it: `AzureCostSource(demo.settings, session=demo.session, ...)`."""

    fake: FakeAzure
    settings: Settings
    session: RoutingSession

    def stop(self) -> None:
        self.session.close()
        self.fake.stop()


def start_demo_azure(settings: Settings, estate: Estate, **fake_options) -> DemoAzure:
    """Start FakeAzure on 127.0.0.1 and return settings carrying its (made-up) credentials and subscriptions.

    The authority and management URLs stay Azure's real https ones; only the session routes them to
    the fake, so demo runs exercise exactly the production connector."""
    fake = FakeAzure(estate, **fake_options).start()
    demo_settings = settings.model_copy(
        update={
            "azure_tenant_id": fake.tenant_id,
            "azure_client_id": fake.client_id,
            "azure_client_secret": SecretStr(fake.client_secret),
            "azure_subscription_ids": list(fake.subscriptions),
        }
    )
    log.info("demo Azure: %d subscriptions served by %s", len(fake.subscriptions), fake.base_url)
    return DemoAzure(fake, demo_settings, RoutingSession(fake.base_url))
