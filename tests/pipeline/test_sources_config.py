"""Sources that are not configured are not failures: file-only runs go green, half-configured Azure fails naming the setting."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from decimal import Decimal

import pytest
import sqlalchemy as sa

from backend.pipeline.runner import PipelineContext
from backend.pipeline.service import PipelineService, default_sources
from backend.pipeline.sources import build_sources
from backend.resources import open_resources
from backend.runtime import Runtime
from backend.sources.azure.source import (
    CONFIGURED,
    MISCONFIGURED,
    NOT_CONFIGURED,
    AzureConfigError,
    AzureCostSource,
    azure_config,
)
from backend.sources.cursors import MemoryCursorStore
from tests.conftest import make_settings
from tests.sources.test_files import FOCUS_COLUMNS, _csv, _focus_rows

CREDENTIALS = {"azure_tenant_id": "tenant-1", "azure_client_id": "client-1", "azure_client_secret": "s3cret-value"}
NOT_CONFIGURED_MESSAGE = (
    "not configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_SUBSCRIPTION_IDS"
)


def _context(settings, sources) -> PipelineContext:
    ctx = PipelineContext(settings, None, None, None, "run-1", sources)  # only settings and state are used
    ctx.cursors = MemoryCursorStore()
    return ctx


# --- what counts as configured ----------------------------------------------------------------------
def test_azure_config_states_name_what_to_set_and_never_the_secret(tmp_path):
    nothing = azure_config(make_settings(tmp_path))
    assert nothing.state == NOT_CONFIGURED and nothing.message == NOT_CONFIGURED_MESSAGE

    ready = azure_config(make_settings(tmp_path, **CREDENTIALS, azure_subscription_ids="sub-a,sub-b"))
    assert ready.state == CONFIGURED and ready.message == "configured (2 subscriptions)"
    one = azure_config(make_settings(tmp_path, **CREDENTIALS, azure_subscription_ids="sub-a"))
    assert one.message == "configured (1 subscription)"

    no_subscriptions = azure_config(make_settings(tmp_path, **CREDENTIALS))
    assert no_subscriptions.state == MISCONFIGURED and no_subscriptions.missing == ("AZURE_SUBSCRIPTION_IDS",)
    assert no_subscriptions.message.startswith("misconfigured: set AZURE_SUBSCRIPTION_IDS (comma-separated")

    no_secret = azure_config(make_settings(tmp_path, azure_tenant_id="tenant-1", azure_client_secret="  "))
    assert no_secret.missing == ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_IDS")
    assert "set AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_SUBSCRIPTION_IDS" in no_secret.message

    for config in (nothing, ready, one, no_subscriptions, no_secret):
        assert "s3cret-value" not in config.message and "s3cret-value" not in repr(config)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"demo_mode": False}, ["inbox"]),  # a file-only deployment
        ({}, ["demo", "inbox"]),  # nothing set: the demo estate by default
        ({"demo_mode": True}, ["demo", "inbox"]),
        ({"demo_mode": False, **CREDENTIALS, "azure_subscription_ids": "sub-a"}, ["azure", "inbox"]),
        ({**CREDENTIALS, "azure_subscription_ids": "sub-a"}, ["azure", "inbox"]),  # credentials end the demo
        # Half configured: Azure stays in so the run fails naming the setting, and no demo estate is loaded
        # into a lake meant for a real tenant.
        ({"demo_mode": False, **CREDENTIALS}, ["azure", "inbox"]),
        ({"azure_tenant_id": "tenant-1"}, ["azure", "inbox"]),
        ({"demo_mode": True, "azure_tenant_id": "tenant-1"}, ["demo", "inbox"]),  # the demo was asked for
    ],
)
def test_default_sources(tmp_path, values, expected):
    assert default_sources(make_settings(tmp_path, **values)) == expected


def test_explicit_azure_without_any_setting_is_skipped_with_what_to_set(tmp_path):
    ctx = _context(make_settings(tmp_path, demo_mode=False), ["azure"])
    with ExitStack() as resources:
        assert build_sources(ctx, resources) == []
    assert ctx.state.skipped_sources == [{"source": "azure", "detail": NOT_CONFIGURED_MESSAGE}]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (CREDENTIALS, "set AZURE_SUBSCRIPTION_IDS"),
        (
            {"azure_tenant_id": "tenant-1", "azure_client_id": "client-1", "azure_subscription_ids": "sub-a"},
            "set AZURE_CLIENT_SECRET,",
        ),
    ],
)
@pytest.mark.parametrize("demo_mode", [False, True])
def test_half_configured_azure_is_refused_naming_the_setting(tmp_path, values, named, demo_mode):
    # Demo mode does not swap a half-configured tenant for the demo one: the user meant a real tenant.
    settings = make_settings(tmp_path, demo_mode=demo_mode, **values)
    with pytest.raises(AzureConfigError, match=named), ExitStack() as resources:
        build_sources(_context(settings, ["azure"]), resources)
    with pytest.raises(AzureConfigError, match=named):
        AzureCostSource(settings, cursors=MemoryCursorStore())


# --- end to end on the real servers -------------------------------------------------------------------
def _file_only_settings(tmp_path, pg_url, kafka_bootstrap, **overrides):
    tag = uuid.uuid4().hex[:8]
    return make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_costs=f"file-only.{tag}",
        kafka_consumer_group=f"file-only-{tag}",
        lake_uri=str(tmp_path / "lake"),
        demo_mode=False,
        **overrides,
    )


def _runs(service: PipelineService) -> list[tuple[str, str | None]]:
    with service.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT status, error FROM ops.pipeline_runs ORDER BY 1"))]


@pytest.mark.slow
def test_file_only_deployment_runs_green_and_loads_the_inbox(tmp_path, pg_url, kafka_bootstrap, spark):
    settings = _file_only_settings(tmp_path, pg_url, kafka_bootstrap)
    settings.inbox_dir.mkdir(parents=True)
    service = PipelineService(open_resources(Runtime(settings)))
    try:
        assert service.default_sources() == ["inbox"]
        # A fresh deployment with nothing to import: every step runs over nothing, and that is a success.
        empty = service.run(trigger="test")
        assert empty.status == "succeeded", empty.error
        assert empty.steps["ingest"].rows_out == 0 and empty.steps["ingest"].detail["inbox"] == []

        focus = _csv(FOCUS_COLUMNS, _focus_rows())
        (settings.inbox_dir / "focus-march.csv").write_bytes(focus)
        loaded = service.run(trigger="test")  # what `python -m backend.pipeline run` and the schedule do
        assert loaded.status == "succeeded", loaded.error
        assert [i["status"] for i in loaded.steps["ingest"].detail["inbox"]] == ["sent"]
        with service.engine.connect() as conn:
            actual = conn.execute(sa.text("SELECT sum(actual_cost) FROM mart.fact_cost_daily")).scalar()
        expected = sum(Decimal(r["BilledCost"]) for r in _focus_rows())
        assert actual is not None and round(actual, 2) == round(expected, 2) > 0
        assert (settings.inbox_dir / "processed" / "focus-march.csv").exists()

        # Nothing new since: green again, and the mart is unchanged.
        again = service.run(trigger="test")
        assert again.status == "succeeded", again.error
        with service.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(actual_cost) FROM mart.fact_cost_daily")).scalar() == actual

        # Asking for Azure by name without any Azure setting is noted in the run, not a failure.
        asked = service.run(steps=["ingest", "bronze"], sources=["azure"], trigger="test")
        assert asked.status == "succeeded", asked.error
        assert asked.steps["ingest"].detail["skipped_sources"] == [
            {"source": "azure", "detail": NOT_CONFIGURED_MESSAGE}
        ]
        assert {status for status, _ in _runs(service)} == {"succeeded"}
    finally:
        service.close()


@pytest.mark.slow
def test_credentials_without_subscriptions_fail_the_run_at_ingest_naming_the_setting(tmp_path, pg_url, kafka_bootstrap):
    settings = _file_only_settings(tmp_path, pg_url, kafka_bootstrap, **CREDENTIALS)
    service = PipelineService(open_resources(Runtime(settings)))
    try:
        assert service.default_sources() == ["azure", "inbox"]
        run = service.run(steps=["ingest", "bronze"], trigger="test")
        assert run.status == "failed"
        assert run.error.startswith("ingest: AzureConfigError: Azure source misconfigured: set AZURE_SUBSCRIPTION_IDS")
        assert "s3cret-value" not in run.error
        [(status, error)] = _runs(service)
        assert status == "failed" and "AZURE_SUBSCRIPTION_IDS" in error
    finally:
        service.close()
