"""The named pipeline steps: thin adapters from a PipelineContext to the ingest, medallion, mart and analytics modules."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from backend.demo import lifecycle
from backend.mart import demo as mart_demo
from backend.mart import progress
from backend.mart.run_records import StepResult
from backend.pipeline.runner import PipelineContext, Step
from backend.pipeline.sources import build_sources

log = logging.getLogger(__name__)

ALL_STEPS = ("ingest", "bronze", "silver", "gold", "mart", "allocation", "analytics", "budgets")


def remove_demo(ctx: PipelineContext) -> StepResult:
    """Remove the demo estate from every layer now (Sources & settings' button), under the pipeline lock."""
    with ctx.engine.connect() as conn:
        loaded = mart_demo.demo_loaded(conn)
    if not loaded:
        return StepResult(rows_out=0, detail={"demo_removed": False, "detail": "no demo data loaded"})
    detail = lifecycle.remove_demo_data(ctx.engine, ctx.lake, ctx.settings)
    _forget_demo_allocation(ctx)
    return StepResult(rows_out=0, detail=detail)


def ingest(ctx: PipelineContext) -> StepResult:
    """Fetch every source into Kafka under a batch id (cursors do not move yet)."""
    from backend.ingest.handshake import new_batch_id, send_batch
    from backend.ingest.producer import KafkaChunkSink
    from backend.sources import fx
    from backend.sources.files import scan_inbox

    sent: list[tuple[Any, str]] = []
    detail: dict[str, Any] = {"batches": [], "inbox": []}
    rows = 0
    remote, remote_error = _pull_remote_inbox(ctx, detail)  # first: what it pulls is "real data coming"
    _keep_demo_apart(ctx, detail)

    def before_real(source) -> None:
        # The demo leaves before the first real batch goes out: real totals never include demo rows.
        if lifecycle.is_real_source(source.name, ctx.settings) and not detail.get("demo_removed"):
            with ctx.engine.connect() as conn:
                loaded = mart_demo.demo_loaded(conn)
            if loaded:
                detail.update(lifecycle.remove_demo_data(ctx.engine, ctx.lake, ctx.settings))

    with KafkaChunkSink(ctx.settings) as sink, ExitStack() as resources:
        sources = build_sources(ctx, resources)
        # Rates files are checked before anything is sent (a bad one fails the import, naming its rows) and
        # written after the cost files went out, so a refused cost file leaves the rates untouched too.
        rates_files = [fx.parse_rates(path, ctx.settings) for path in ctx.state.fx_files]
        for source in sources:
            if getattr(source, "check", None) is None or source.check():
                before_real(source)
            receipt = send_batch(source, sink, ctx.engine, batch_id=new_batch_id(ctx.run_id, source.name))
            sent.append((source, receipt.batch_id))
            rows += receipt.cost_rows
            detail["batches"].append({"source": source.name, "batch": receipt.batch_id, "chunks": receipt.chunks})
            # Files whose content bronze already holds: said in the run's detail, not only in the log.
            for skip in getattr(source, "skipped", ()):
                detail.setdefault("skipped_files", []).append({"file": skip.path.name, "detail": skip.message})
            # The load report of every imported file, kept with the run (the import command prints it).
            for prepared in getattr(source, "prepared", ()):
                detail.setdefault("files", []).append(prepared.report())
        for rates in rates_files:
            detail.setdefault("fx_rates", []).append(fx.write_rates(ctx.lake, rates, run_id=ctx.run_id).report())
        if "inbox" in ctx.sources:

            def deliver(source, batch_id: str) -> None:
                before_real(source)
                receipt = send_batch(source, sink, ctx.engine, batch_id=batch_id)
                sent.append((source, receipt.batch_id))

            def import_rates(path: Path) -> str:
                done = fx.import_rates(ctx.lake, ctx.settings, path, run_id=ctx.run_id)
                detail.setdefault("fx_rates", []).append(done.report())
                return done.detail

            settled = remote.settle if remote is not None else None
            scanned = scan_inbox(
                ctx.settings, deliver=deliver, cursors=ctx.cursors, rates=import_rates, on_settled=settled
            )
            for result in scanned:
                detail["inbox"].append({"file": result.file_name, "status": result.status, "detail": result.detail})
    if remote_error is not None:
        raise remote_error  # after every other source went out: one unreadable bucket does not hold them back
    if skipped := ctx.state.skipped_sources:
        detail["skipped_sources"] = skipped
    ctx.state.sent = sent
    # Only the sources hold the demo estate now (2 GB at 5M rows): bronze releases them once committed.
    ctx.state.demo_estate = None
    return StepResult(rows_in=None, rows_out=rows, detail=detail)


def _pull_remote_inbox(ctx: PipelineContext, detail: dict[str, Any]):
    """With INBOX_URI set, copy the bucket's ready exports into the local inbox; (inbox, error to raise later)."""
    from backend.sources.remote_inbox import RemoteInboxError, remote_inbox

    if "inbox" not in ctx.sources or not ctx.settings.inbox_uri:
        return None, None
    remote = remote_inbox(ctx.settings)
    try:
        report = remote.pull()
    except RemoteInboxError as exc:
        log.error("%s", exc)
        detail["inbox_remote"] = {"uri": remote.uri, "error": str(exc)}
        return None, exc
    detail["inbox_remote"] = {"uri": remote.uri, "pulled": report.pulled, "settled": report.settled,
                              "waiting": report.waiting}  # fmt: skip
    return remote, None


def _keep_demo_apart(ctx: PipelineContext, detail: dict[str, Any]) -> None:
    """The demo estate is not loaded once a real source has delivered, nor in a run where one will."""
    if "demo" not in ctx.sources:
        return
    settings = ctx.settings
    with ctx.engine.connect() as conn:
        real_before = lifecycle.real_delivered(conn, settings)
    coming = (
        "files" in ctx.sources
        or ("azure" in ctx.sources and settings.azure_configured)
        or ("inbox" in ctx.sources and lifecycle.inbox_waiting(settings))
    )
    if real_before or coming:
        ctx.state.demo_skipped = True
        detail["demo_skipped"] = "real data " + ("was delivered" if real_before else "arrives in this run")


def bronze(ctx: PipelineContext) -> StepResult:
    """Drain Kafka into bronze, then advance the cursors of exactly the batches bronze now holds."""
    from backend.ingest.consumer import drain
    from backend.ingest.handshake import commit_held

    result = drain(ctx.settings, ctx.lake, run_id=ctx.run_id)
    committed, missing = commit_held(ctx.engine, ctx.lake, ctx.state.sent)
    # Nothing after this needs the sources, and a demo source holds its whole estate: let it go now
    # rather than hold it through silver, gold and the mart.
    ctx.state.sent = []
    for batch_id in missing:
        # The broker lost it (memory storage) or it is still in flight: the cursor stays, the next run re-fetches.
        log.warning("batch %s is not all in bronze; its days will be fetched again next run", batch_id)
    return StepResult(
        rows_in=result.messages,
        rows_out=result.cost_rows,
        detail={
            "bronze_rows": result.bronze_rows,
            "dead_letters": result.dead_letters,
            "skipped_replays": result.skipped,
            "committed_batches": committed,
            "batches_not_in_bronze": missing,
        },
    )


def silver(ctx: PipelineContext) -> StepResult:
    """New bronze -> silver (MERGE, quarantine); the months touched are handed to gold."""
    from backend.lake.catalog import SILVER_COSTS
    from backend.medallion.refine import MedallionStats, reset_for_rebuild, run_silver

    stats = MedallionStats(run_id=ctx.run_id, full_rebuild=ctx.state.options.full_rebuild)
    if stats.full_rebuild:
        reset_for_rebuild(ctx.lake, run_id=ctx.run_id)
    ctx.state.silver_version_before = ctx.lake.version(SILVER_COSTS.name)
    months = run_silver(ctx.spark, ctx.lake, stats, run_id=ctx.run_id)
    ctx.state.affected_months = sorted(months)
    ctx.state.medallion = stats
    return StepResult(
        rows_in=stats.source_rows,
        rows_out=stats.silver_upserted,
        detail={
            "valid_rows": stats.valid_rows,
            "quarantined": stats.quarantined,
            "superseded": stats.superseded_rows,
            "removed_by_rerating": stats.silver_removed,
            "quarantine_rules": stats.quarantine_rules,
            "affected_months": sorted(months),
        },
    )


def gold(ctx: PipelineContext) -> StepResult:
    """Recompute gold for the months silver touched, plus any a killed run left behind (all months on a full rebuild)
    and those whose FX rates (or reporting currency) changed since gold last converted."""
    from backend.lake.catalog import GOLD_COST_DAILY, SILVER_COSTS
    from backend.medallion.refine import run_gold
    from backend.sources.fx import reporting_currency

    _drop_retired_tables(ctx)
    months = ctx.state.affected_months
    full = ctx.state.options.full_rebuild
    if months is None and not full:
        # Run on its own (e.g. "run gold" from the UI): refresh every month silver holds.
        full = True
    if full:
        months, silver_version = None, ctx.lake.version(SILVER_COSTS.name)
    else:
        pending, silver_version = progress.pending_months(
            ctx.engine, ctx.lake, stage="gold", upstream_table=SILVER_COSTS.name, column=SILVER_COSTS.partition_by[0]
        )
        months = progress.merge_months(months, pending)
    currency = reporting_currency(ctx.settings, ctx.lake)
    fx_months, fx_mark = _fx_months(ctx, currency)
    if months is not None and fx_months:
        log.info("gold: FX rates to %s changed for %s; converting those months again", currency, fx_months)
        months = sorted(set(months) | set(fx_months))
    # The mart step loads what gold rewrote (None: everything).
    ctx.state.affected_months = months
    detail: dict[str, Any] = {"reporting_currency": currency or "", "fx_months": fx_months}
    if months == []:
        _record_fx(ctx, fx_mark)
        return StepResult(rows_in=0, rows_out=0, detail={**detail, "affected_months": []})
    days = None if full else _days_changed(ctx)
    if days and fx_months:
        # Gold keeps a month's untouched days as stored only while their conversion is current.
        days = {m: d for m, d in days.items() if m not in fx_months}
    ctx.state.gold_version_before = ctx.lake.version(GOLD_COST_DAILY.name)
    rows = run_gold(ctx.spark, ctx.lake, months, run_id=ctx.run_id, days=days, reporting_currency=currency)
    # The months run_gold rewrote only some days of (a month without days is rewritten whole).
    ctx.state.gold_days = {m: days[m] for m in months or [] if days and days.get(m)} or None
    progress.record(ctx.engine, "gold", SILVER_COSTS.name, silver_version, run_id=ctx.run_id)
    _record_fx(ctx, fx_mark)
    return StepResult(
        rows_out=sum(rows.values()), detail={**detail, "tables": rows, "affected_months": months or "all"}
    )


def _drop_retired_tables(ctx: PipelineContext) -> None:
    """An older lake's tables this version no longer writes go, rather than stay in the gold browser frozen."""
    from backend.lake.catalog import RETIRED_TABLES
    from backend.lake.engine import remove_tree

    for name in RETIRED_TABLES:
        if ctx.lake.exists(name):
            remove_tree(ctx.lake, ctx.lake.uri(name))
            log.info("gold: dropped %s, a table this version no longer writes", name)


# Gold's mark on silver/fx_rates names the reporting currency it converted to, so changing
# REPORTING_CURRENCY is a change of every month ("no mark for this name"), like new rates are.
FX_STAGE = "gold:fx"
_NO_RATES = -1  # the version recorded while no rates table exists (conversion at 1 only)


def _fx_months(ctx: PipelineContext, currency: str | None) -> tuple[list[str], tuple[str, int] | None]:
    """Months gold holds whose conversion is stale: FX partitions changed since gold's mark (every month when
    there is no mark for this reporting currency), and the (mark name, version) to record after gold ran."""
    from backend.lake.catalog import GOLD_COST_DAILY, SILVER_FX_RATES

    name = f"{SILVER_FX_RATES.name}:{currency or '-'}"
    version = ctx.lake.version(SILVER_FX_RATES.name)
    current = _NO_RATES if version is None else version
    done = progress.recorded_version(ctx.engine, FX_STAGE, name)
    if done == current:
        return [], (name, current)
    if done is None and currency is None and not _fx_marked(ctx):
        return [], (name, current)  # gold never converted and has nothing to convert to: nothing is stale
    changed: set[str] | None = None  # None: every month
    if done is not None and done != _NO_RATES and version is not None:
        changed = ctx.lake.changed_partitions(SILVER_FX_RATES.name, SILVER_FX_RATES.partition_by[0], since=done)
    if not ctx.lake.exists(GOLD_COST_DAILY.name):
        return [], (name, current)
    held = {part["charge_month"] for part in ctx.lake.table(GOLD_COST_DAILY.name).partitions()}
    return sorted(held if changed is None else held & changed), (name, current)


def _fx_marked(ctx: PipelineContext) -> bool:
    """Whether gold has recorded a conversion mark before (for any reporting currency)."""
    return progress.has_stage(ctx.engine, FX_STAGE)


def _record_fx(ctx: PipelineContext, mark: tuple[str, int] | None) -> None:
    if mark is not None:
        progress.record(ctx.engine, FX_STAGE, mark[0], mark[1], run_id=ctx.run_id)


def _days_changed(ctx: PipelineContext) -> dict[str, list[str]] | None:
    """The charge days this run's silver changed, per month, when they are all gold has to catch up on.

    Gold then recomputes only those days of a month. That holds only if gold was current with silver
    before this run's silver step; after a killed run (or a silver step run on its own) the earlier
    changes are known by month only, so gold recomputes the months whole (None).
    """
    from backend.lake.catalog import SILVER_COSTS

    stats = ctx.state.medallion
    before = ctx.state.silver_version_before
    if stats is None or not stats.touched_days or before is None:
        return None
    if progress.recorded_version(ctx.engine, "gold", SILVER_COSTS.name) != before:
        return None
    return stats.touched_days


def mart(ctx: PipelineContext) -> StepResult:
    """Load the affected gold months (and any a killed run left unloaded) into the Postgres mart in one transaction."""
    from backend.lake.catalog import GOLD_COST_DAILY
    from backend.mart.load import load_fx_rates, load_gold
    from backend.mart.reconcile import reconcile
    from backend.sources import fx

    # The rates gold converted with (small, replaced whole): the pages say which dates a converted figure used.
    load_fx_rates(
        ctx.engine,
        fx.stored_rates(ctx.lake),
        reporting_currency=fx.reporting_currency(ctx.settings, ctx.lake),
        run_id=ctx.run_id,
    )
    pending, gold_version = progress.pending_months(
        ctx.engine, ctx.lake, stage="mart", upstream_table=GOLD_COST_DAILY.name, column=GOLD_COST_DAILY.partition_by[0]
    )
    # Run on its own (no months handed down): reload everything gold holds.
    months = (
        progress.merge_months(ctx.state.affected_months, pending) if ctx.state.affected_months is not None else None
    )
    if months == []:
        return StepResult(rows_in=0, rows_out=0, detail={"months": []})
    stats = load_gold(ctx.engine, ctx.lake, run_id=ctx.run_id, months=months, days=_gold_days(ctx))
    progress.record(ctx.engine, "mart", GOLD_COST_DAILY.name, gold_version, run_id=ctx.run_id)
    detail = asdict(stats)
    # Mart vs silver vs what the source reported, per day: stored for the Pipeline page; a mismatch is
    # reported loudly but does not fail the load (the numbers are what the source sent).
    report = reconcile(ctx.engine, lake=ctx.lake, months=stats.months, run_id=ctx.run_id)
    mismatches = report.mismatches
    detail["reconciliation"] = {"check_id": report.check_id, "days": len(report.rows), "mismatches": len(mismatches)}
    if mismatches:
        log.warning(
            "reconciliation check %s: %d mismatching day(s), e.g. %s", report.check_id, len(mismatches), mismatches[0]
        )
    return StepResult(rows_in=stats.rows_in, rows_out=stats.rows_loaded, detail=detail)


def _gold_days(ctx: PipelineContext) -> dict[str, list[str]] | None:
    """The days this run's gold rewrote, per month, when they are all the mart has to catch up on.

    That holds only if the mart had loaded the gold version this run's gold started from; after a killed
    run (or a gold step run on its own) the earlier changes are known by month only, so the mart loads
    the months whole (None).
    """
    from backend.lake.catalog import GOLD_COST_DAILY

    before = ctx.state.gold_version_before
    if not ctx.state.gold_days or before is None:
        return None
    if progress.recorded_version(ctx.engine, "mart", GOLD_COST_DAILY.name) != before:
        return None
    return ctx.state.gold_days


def _forget_demo_allocation(ctx: PipelineContext) -> None:
    """The demo's seeded rules and its allocated cost leave with the demo (the mart's showback follows at once)."""
    from backend.mart import allocation as mart_allocation

    mart_allocation.forget_demo_rules(ctx.engine)
    mart_allocation.recompute(ctx.engine, run_id=ctx.run_id)


def allocation(ctx: PipelineContext) -> StepResult:
    """Apply the allocation rules in force to the loaded cost: the mart (SQL) and gold (Spark, the same SQL)."""
    from backend.allocation.rules import RuleSet
    from backend.mart import allocation as mart_allocation
    from backend.medallion.allocation import run_allocation

    seeded = mart_allocation.seed_demo_rules(ctx.engine)  # only on a demo install without rules
    mart_allocation.forget_demo_rules(ctx.engine)  # only once the demo has left
    result = mart_allocation.recompute(ctx.engine, run_id=ctx.run_id)
    current = mart_allocation.current_rules(ctx.engine)
    ruleset, version = (RuleSet(), None) if current is None else (current.ruleset, current.version)
    gold = run_allocation(ctx.spark, ctx.lake, ruleset, version=version, run_id=ctx.run_id)
    detail: dict[str, Any] = {
        "rules_version": result.rules_version,
        "months": result.months,
        "unallocated_share": result.unallocated_share,
        "gold_tables": gold,
    }
    if seeded:
        detail["demo_rules_seeded"] = seeded
    return StepResult(rows_out=result.rows, detail=detail)


def analytics(ctx: PipelineContext) -> StepResult:
    """Anomalies and forecasts over gold, written to the mart."""
    from backend.analytics.run import run_analytics

    stats = run_analytics(ctx.settings, ctx.lake, ctx.spark, ctx.engine, run_id=ctx.run_id)
    return StepResult(rows_out=int(stats.get("anomalies", 0)), detail=stats)


def budgets(ctx: PipelineContext) -> StepResult:
    """Evaluate every budget against actual and forecast spend; alert once per threshold (channels and webhooks)."""
    from backend.analytics.budgets import evaluate_budgets

    seeded = lifecycle.seed_demo_budgets(ctx.engine)  # only on a demo install without budgets
    stats = evaluate_budgets(
        ctx.engine,
        run_id=ctx.run_id,
        retries=ctx.settings.budget_webhook_retries,
        timeout=ctx.settings.budget_webhook_timeout_s,
        settings=ctx.settings,  # the NOTIFY_* and page channels get the alerts too
    )
    if seeded:
        stats["demo_budgets_seeded"] = seeded
    return StepResult(rows_in=stats.get("budgets"), rows_out=stats.get("alerts"), detail=stats)


def maintenance(ctx: PipelineContext) -> StepResult:
    """Compact bronze's small files (one per Kafka drain) and vacuum every table's unreferenced files.

    Bronze is compacted only when silver has processed all of it: silver finds new bronze rows by the
    files a version added, so the compaction's version is then recorded as processed too (nothing is
    appended in between: runs hold the pipeline lock). Otherwise it waits for the next maintenance run.
    """
    from backend.lake.catalog import BRONZE_COST_RECORDS, SILVER_COSTS
    from backend.medallion.refine import BRONZE_PROGRESS_APP_ID
    from backend.medallion.silver import record_progress

    lake = ctx.lake
    detail: dict[str, Any] = {"compacted": {}, "vacuumed_files": {}}
    bronze_version = lake.version(BRONZE_COST_RECORDS.name)
    processed = lake.transaction_version(SILVER_COSTS.name, BRONZE_PROGRESS_APP_ID)
    if bronze_version is not None and processed == bronze_version:
        metrics = lake.compact(BRONZE_COST_RECORDS.name, run_id=ctx.run_id)
        detail["compacted"][BRONZE_COST_RECORDS.name] = {
            "files_removed": metrics.get("numFilesRemoved", 0),
            "files_added": metrics.get("numFilesAdded", 0),
        }
        after = lake.version(BRONZE_COST_RECORDS.name)
        if after != bronze_version:
            record_progress(lake, (BRONZE_PROGRESS_APP_ID, after), run_id=ctx.run_id)
    elif bronze_version is not None:
        detail["bronze_not_compacted"] = "silver has not processed every bronze file yet"
    for layer in ("bronze", "silver", "gold"):
        for table in lake.list_tables(layer):
            gone = lake.vacuum(table, retention_hours=ctx.settings.lake_vacuum_retention_hours)
            if gone:
                detail["vacuumed_files"][table] = gone
    return StepResult(rows_out=sum(detail["vacuumed_files"].values()), detail=detail)


REGISTRY: dict[str, Step] = {
    "ingest": ingest,
    "bronze": bronze,
    "silver": silver,
    "gold": gold,
    "mart": mart,
    "allocation": allocation,
    "analytics": analytics,
    "budgets": budgets,
    "maintenance": maintenance,
    "remove_demo": remove_demo,
}
