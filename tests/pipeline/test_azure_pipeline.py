"""The "azure" source in demo mode, end to end over FakeAzure: ingest -> Kafka -> bronze -> silver -> gold -> mart, both modes."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from backend.demo.estate import generate_estate
from backend.demo.fake_azure import FakeAzure
from backend.lake.catalog import SILVER_COSTS
from backend.pipeline.runner import PipelineContext
from backend.pipeline.service import PipelineService
from backend.pipeline.sources import DemoPathConflictError, build_sources, demo_azure_active
from backend.resources import open_resources
from backend.runtime import Runtime
from backend.sources.azure.source import Window, query_body
from backend.sources.cursors import CursorRow, MemoryCursorStore
from tests.conftest import make_settings

DEMO_ROWS = 3000
STEPS = ["ingest", "bronze", "silver", "gold", "mart"]


def _fake_totals(seed: int) -> tuple[dict[str, Decimal], int]:
    """What FakeAzure says the demo tenant cost from the estate's first day to today, per metric (asked
    directly, not through the connector), and how many subscriptions it serves."""
    today = datetime.now(UTC).date()
    estate = generate_estate(seed=seed, start=date(today.year - 1, today.month, 1), months=13, target_rows=DEMO_ROWS)
    fake = FakeAzure(estate)  # query_rows needs no server
    totals = {}
    for metric in ("ActualCost", "AmortizedCost"):
        total = Decimal(0)
        for subscription in fake.subscriptions:
            columns, rows = fake.query_rows(subscription, query_body(Window(subscription, metric, estate.start, today)))
            i_cost = [c["name"] for c in columns].index("Cost")
            total += sum((Decimal(row[i_cost]) for row in rows), Decimal(0))
        totals[metric] = total
    return totals, len(fake.subscriptions)


def _state(service: PipelineService) -> dict[str, object]:
    with service.engine.connect() as conn:
        actual, amortized, rows = conn.execute(
            sa.text("SELECT sum(actual_cost), sum(amortized_cost), count(*) FROM mart.fact_cost_daily")
        ).one()
    silver = service.lake.read_arrow(SILVER_COSTS.name, columns=["BilledCost", "EffectiveCost"])
    return {
        "actual": actual,
        "amortized": amortized,
        "fact_rows": rows,
        "silver_rows": silver.num_rows,
        "silver_billed": pc.sum(silver["BilledCost"]).as_py(),
    }


def test_azure_source_uses_the_demo_tenant_only_without_credentials(tmp_path):
    assert demo_azure_active(make_settings(tmp_path, demo_mode=True))
    assert demo_azure_active(make_settings(tmp_path))  # nothing configured: demo mode by default
    real = {"azure_tenant_id": "t", "azure_client_id": "c", "azure_client_secret": "s"}
    assert not demo_azure_active(make_settings(tmp_path, **real))
    assert not demo_azure_active(make_settings(tmp_path, demo_mode=True, **real))  # credentials win
    assert not demo_azure_active(make_settings(tmp_path, demo_mode=False))


def test_the_demo_tenant_bills_what_the_demo_load_delivers():
    """Both demo paths land the same money: the synthetic load's totals (tests/pipeline/crash.py, checked
    against the mart by the crash and compose tests) are what the fake tenant answers."""
    from tests.pipeline.crash import expected_totals

    totals, _ = _fake_totals(42)
    assert (totals["ActualCost"], totals["AmortizedCost"]) == expected_totals(DEMO_ROWS, seed=42)


def _context(settings, sources, cursors) -> PipelineContext:
    ctx = PipelineContext(settings, None, None, None, "run-1", sources)  # only settings and state are used
    ctx.cursors = cursors
    return ctx


def _loaded(cursors: MemoryCursorStore, source: str, scope: str) -> None:
    now, batch = datetime.now(UTC), uuid.uuid4().hex
    cursors.stage(batch, source, [CursorRow(source, scope, "ActualCost", now.date(), now)], chunk_count=1)
    cursors.commit(batch)


@pytest.mark.parametrize(("loaded_by", "asked"), [("synthetic", "azure"), ("azure", "demo")])
def test_the_demo_estate_enters_a_lake_through_one_path_only(tmp_path, loaded_by, asked):
    settings = make_settings(tmp_path, demo_mode=True, demo_rows=DEMO_ROWS)
    cursors = MemoryCursorStore()
    ctx = _context(settings, [asked], cursors)
    from backend.pipeline.sources import demo_estate

    _loaded(cursors, loaded_by, "some-other-subscription")  # another tenant's days do not conflict
    with ExitStack() as resources:
        assert len(build_sources(ctx, resources)) == 1
    _loaded(cursors, loaded_by, demo_estate(ctx).subscriptions[0].id)
    with pytest.raises(DemoPathConflictError, match="already holds it"), ExitStack() as resources:
        build_sources(ctx, resources)
    with pytest.raises(DemoPathConflictError, match="run one of them"), ExitStack() as resources:
        build_sources(_context(settings, ["demo", "azure"], MemoryCursorStore()), resources)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["query", "cost_details"])
def test_azure_demo_tenant_end_to_end_to_the_cent(tmp_path, pg_url, kafka_bootstrap, spark, mode):
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_costs=f"azure-e2e.{mode}.{uuid.uuid4().hex[:6]}",
        kafka_consumer_group=f"azure-e2e-{uuid.uuid4().hex[:6]}",
        lake_uri=str(tmp_path / "lake"),
        demo_mode=True,
        demo_rows=DEMO_ROWS,
        azure_mode=mode,
    )
    service = PipelineService(open_resources(Runtime(settings)))
    try:
        first = service.run(steps=STEPS, sources=["azure"], trigger="test")
        assert first.status == "succeeded", first.error
        batches = first.steps["ingest"].detail["batches"]
        assert [b["source"] for b in batches] == ["azure"] and batches[0]["chunks"] > 0
        assert first.steps["bronze"].detail["committed_batches"] == [batches[0]["batch"]]

        expected, _ = _fake_totals(settings.demo_seed)
        after_first = _state(service)
        assert after_first["actual"] == expected["ActualCost"] > 0
        assert after_first["amortized"] == expected["AmortizedCost"] > after_first["actual"] * Decimal("0.5")
        assert after_first["silver_billed"] == after_first["actual"]
        assert first.steps["mart"].detail["reconciliation"]["mismatches"] == 0

        # The second run fetches again (at least the open window, which Azure re-rates; today the whole
        # window, see PostgresCursorStore): the MERGE absorbs the repeat, nothing changes to the cent.
        second = service.run(steps=STEPS, sources=["azure"], trigger="test")
        assert second.status == "succeeded", second.error
        assert second.steps["ingest"].rows_out > 0
        assert _state(service) == after_first

        # This lake holds the demo estate through the demo tenant now: the synthetic demo load is refused.
        blocked = service.run(steps=["ingest"], sources=["demo"], trigger="test")
        assert blocked.status == "failed" and "already holds it" in blocked.error
        assert _state(service) == after_first
    finally:
        service.close()
