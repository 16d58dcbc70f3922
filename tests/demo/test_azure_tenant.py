"""The demo tenant through the production connector: a Cost Details window without cost is NoDataFound, zero rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from backend.demo.azure_tenant import start_demo_azure
from backend.demo.estate import generate_estate
from backend.sources.azure import AzureCostSource
from backend.sources.cursors import MemoryCursorStore
from tests.conftest import make_settings

NOW = datetime(2025, 2, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def estate():
    return generate_estate(seed=5, start=date(2025, 1, 1), months=2, target_rows=3_000, subscriptions=2, anomalies=0)


def test_a_cost_details_window_without_cost_is_no_data_found_and_zero_days(tmp_path, estate):
    # 60 days back from Feb 10 reaches into December, before the estate (and the tenant's cost) began.
    demo = start_demo_azure(make_settings(tmp_path, azure_backfill_days=60), estate, report_retry_after=0)
    try:
        cursors = MemoryCursorStore()
        source = AzureCostSource(
            demo.settings,
            cursors=cursors,
            session=demo.session,
            mode="cost_details",
            now=lambda: NOW,
            sleep=lambda s: None,
        )
        chunks = list(source.fetch("b1"))
        source.commit("b1")
    finally:
        demo.stop()
    december = [w for w in source.last_windows if w.start.month == 12]
    assert december and all(w.end == date(2024, 12, 31) for w in december)
    assert not any(c.meta["window_start"].startswith("2024-12") for c in chunks)
    rows = cursors.rows("azure")
    empty = [r for r in rows if r.day.month == 12]
    assert empty and all(r.row_count == 0 and r.reported_total == Decimal(0) for r in empty)
    # January and February do have cost, fetched in full.
    january = sum(r.reported_total for r in rows if r.day.month == 1 and r.metric == "ActualCost")
    assert january > 0
