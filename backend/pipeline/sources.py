"""Which sources a run pulls and how each is built: the defaults, the demo's two paths, Azure, files."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path

from backend.config import Settings
from backend.pipeline.runner import PipelineContext

log = logging.getLogger(__name__)

SOURCE_NAMES = ("demo", "azure", "inbox", "files")


def default_sources(settings: Settings) -> list[str]:
    """Sources a run pulls when none are named: the demo estate in demo mode, Azure when any of its
    settings is set, and always the inbox (so a deployment that only imports files runs green)."""
    from backend.sources.azure.source import MISCONFIGURED, NOT_CONFIGURED, azure_config

    azure = azure_config(settings).state
    if settings.demo_mode is None and azure == MISCONFIGURED:
        # Demo mode is implied here only because a credential is missing: the user meant Azure, so the
        # run fails naming the setting rather than filling their lake with the demo estate.
        return ["azure", "inbox"]
    if settings.is_demo:
        return ["demo", "inbox"]
    # Half-configured Azure stays in, so its run fails with the setting to fix instead of going quiet.
    return ["inbox"] if azure == NOT_CONFIGURED else ["azure", "inbox"]


def demo_estate(ctx: PipelineContext):
    """The demo estate: 13 months ending with the current month, same seed every time, so it never changes."""
    from backend.demo.estate import generate_estate

    if ctx.state.demo_estate is None:  # "demo" and the demo tenant's "azure" share one estate per run
        today = datetime.now(UTC).date()
        start = date(today.year - 1, today.month, 1)
        ctx.state.demo_estate = generate_estate(
            seed=ctx.settings.demo_seed, start=start, months=13, target_rows=ctx.settings.demo_rows
        )
    return ctx.state.demo_estate


def demo_azure_active(settings) -> bool:
    """Whether the "azure" source talks to the embedded FakeAzure: demo mode on and no Azure setting at all.

    A half-configured tenant is not the demo's: its run fails naming the missing setting instead."""
    from backend.sources.azure.source import NOT_CONFIGURED, azure_config

    return settings.is_demo and azure_config(settings).state == NOT_CONFIGURED


def _demo_azure_source(ctx: PipelineContext, resources: ExitStack):
    """The production AzureCostSource pointed at FakeAzure serving the demo estate (stopped with `resources`).

    Only the base URLs (through the RoutingSession given to msal and the ARM client) and the made-up
    credentials differ from a real tenant, so the demo shows the real connector at work: msal tokens,
    paging, the Cost Details report flow, cursors and the open window."""
    from backend.demo.azure_tenant import start_demo_azure
    from backend.sources.azure.source import AzureCostSource

    estate = demo_estate(ctx)
    today = datetime.now(UTC).date()
    # The whole estate is history to the fake tenant: backfill from its first day, so the Azure path
    # shows the same months and totals as the demo load.
    settings = ctx.settings.model_copy(update={"azure_backfill_days": (today - estate.start).days + 1})
    # A report is "ready" at the first poll with Retry-After 0: the 202 -> poll -> blobs flow runs, without
    # making a demo user wait Azure's usual minute per report.
    demo = start_demo_azure(settings, estate, report_retry_after=0)
    resources.callback(demo.stop)
    log.info(
        "azure source: no Azure credentials and demo mode on, so it reads the demo tenant at %s", demo.fake.base_url
    )
    return AzureCostSource(demo.settings, cursors=ctx.cursors, mode=ctx.settings.azure_mode, session=demo.session)


class DemoPathConflictError(RuntimeError):
    """The demo estate would be loaded a second time through the other demo path (gold would switch between them)."""


def _check_one_demo_path(ctx: PipelineContext) -> None:
    """The demo estate enters a lake through one path only: "demo" (FOCUS rows) or the demo tenant's "azure".

    Both carry the same money for the same subscriptions as different row families. Silver spells
    their subscription ids alike, so gold.prefer_detail keeps one family per subscription-day and
    nothing is counted twice; but which family wins depends on what each path delivered that day,
    so the user would see the same estate switch source (and detail) from day to day. One path per
    lake keeps the demo's story stable."""
    wants_demo = "demo" in ctx.sources
    wants_tenant = "azure" in ctx.sources and demo_azure_active(ctx.settings)
    if not (wants_demo or wants_tenant):
        return
    if wants_demo and wants_tenant:
        raise DemoPathConflictError(
            "sources 'demo' and 'azure' (the demo tenant, no Azure credentials set) both load the demo estate; "
            "run one of them"
        )
    subscriptions = {s.id for s in demo_estate(ctx).subscriptions}
    other = "azure" if wants_demo else "synthetic"  # cursor names of the path not asked for
    loaded = ctx.cursors.delivered_scopes(other) & subscriptions
    if loaded:
        asked, path = ("demo", "the demo Azure tenant") if wants_demo else ("azure", "the 'demo' source")
        raise DemoPathConflictError(
            f"source {asked!r} would load the demo estate again: this lake already holds it through {path} "
            f"({len(loaded)} subscription(s)), and gold would switch between the two by subscription-day. "
            "Keep to that source, or start from an empty DATA_DIR to try the other path"
        )


def build_sources(ctx: PipelineContext, resources: ExitStack) -> list:
    """The CostSources this run pulls, by name. The inbox is handled separately (one batch per file).

    A source that is not configured at all is left out and noted in ctx.state.skipped_sources.

    Anything a source needs only while it fetches (the demo tenant's FakeAzure) is closed with `resources`."""
    _check_one_demo_path(ctx)
    sources = []
    for name in ctx.sources:
        if name == "demo" and ctx.state.demo_skipped:
            continue
        if name == "demo":
            from backend.demo.estate import SyntheticSource

            # Days after today are held back: the demo estate "arrives" day by day like a real bill.
            today = datetime.now(UTC).date()
            sources.append(SyntheticSource(ctx.settings, demo_estate(ctx), cursors=ctx.cursors, until=today))
        elif name == "azure" and demo_azure_active(ctx.settings):
            sources.append(_demo_azure_source(ctx, resources))
        elif name == "azure":
            from backend.sources.azure.source import NOT_CONFIGURED, AzureCostSource, azure_config

            config = azure_config(ctx.settings)
            if config.state == NOT_CONFIGURED:
                # Nothing set is a deployment without Azure (files only), not a failure: the run says so and
                # goes on. A half-configured one is refused by AzureCostSource, naming the missing setting.
                log.info("azure source skipped: %s", config.message)
                ctx.state.skipped_sources.append({"source": name, "detail": config.message})
                continue
            # The open window is re-planned on every run by the source itself (Azure re-rates it).
            sources.append(AzureCostSource(ctx.settings, cursors=ctx.cursors, mode=ctx.settings.azure_mode))
        elif name == "files":
            from backend.sources.files import FileSource

            paths = [Path(p) for p in ctx.state.options.files]
            source = FileSource(ctx.settings, paths, cursors=ctx.cursors)
            # FX rates files among them are imported by the ingest step itself (not sent through Kafka).
            ctx.state.fx_files.extend(source.rates_paths)
            if source.paths or not source.rates_paths:
                sources.append(source)
        elif name != "inbox":
            raise ValueError(f"unknown source {name!r}; known sources: {', '.join(SOURCE_NAMES)}")
    return sources
