"""The Azure connector against FakeAzure: paging, throttling, token refresh, AADSTS errors, Cost Details, open window."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow.compute as pc
import pytest

from backend.demo.estate import generate_estate
from backend.demo.fake_azure import FakeAzure, Fault
from backend.sources.azure import (
    AzureAuthError,
    AzureCostSource,
    AzureRequestError,
    AzureThrottledError,
    RetryPolicy,
    RoutingSession,
    open_window_start,
    plan_windows,
)
from backend.sources.azure.client import ArmClient
from backend.sources.base import ContentType, PayloadFormat
from backend.sources.cursors import MemoryCursorStore
from tests.conftest import make_settings

NOW = datetime(2025, 3, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def estate():
    return generate_estate(seed=11, start=date(2025, 1, 1), months=3, target_rows=6_000, subscriptions=2, anomalies=0)


@pytest.fixture
def fake(estate):
    with FakeAzure(estate, page_size=20, blob_rows=40) as server:
        yield server


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _settings(tmp_path, fake, **overrides):
    values = {
        "azure_tenant_id": fake.tenant_id,
        "azure_client_id": fake.client_id,
        "azure_client_secret": fake.client_secret,
        "azure_subscription_ids": fake.subscriptions[0],
        "azure_backfill_days": 10,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def _source(settings, fake, *, now=NOW, cursors=None, sleep=None, **kwargs):
    return AzureCostSource(
        settings,
        cursors=cursors if cursors is not None else MemoryCursorStore(),
        session=RoutingSession(fake.base_url),
        now=lambda: now,
        sleep=sleep if sleep is not None else Sleeps(),
        **kwargs,
    )


def _estate_daily(estate, subscription: str, column: str) -> dict[date, Decimal]:
    costs = estate.plain_costs()
    rows = costs.filter(pc.equal(costs["SubAccountId"], f"/subscriptions/{subscription}"))
    out: dict[date, Decimal] = {}
    for day, value in zip(rows["ChargePeriodStart"].to_pylist(), rows[column].to_pylist(), strict=True):
        out[day.date()] = out.get(day.date(), Decimal(0)) + value
    return out


def test_query_pages_over_nextlink_with_azure_column_order_and_exact_totals(tmp_path, fake, estate):
    cursors = MemoryCursorStore()
    source = _source(_settings(tmp_path, fake), fake, cursors=cursors, metrics=("ActualCost",))
    chunks = list(source.fetch("b1"))
    assert len(chunks) >= 3, "10 days x groups at 20 rows a page"
    assert [int(c.meta["page"]) for c in chunks] == list(range(len(chunks)))
    assert all(c.format == PayloadFormat.azure_query and c.content_type == ContentType.json for c in chunks)
    subscription = fake.subscriptions[0]
    assert all(c.key == subscription and c.meta["metric"] == "ActualCost" for c in chunks)
    # Every page was asked with the same body; the next pages at properties.nextLink ($skiptoken).
    assert len(set(fake.bodies)) == 1 and len(fake.bodies) == len(chunks)
    assert sum("$skiptoken=" in r for r in fake.requests) == len(chunks) - 1
    docs = [json.loads(c.payload, parse_float=Decimal) for c in chunks]
    names = [col["name"] for col in docs[0]["properties"]["columns"]]
    assert names == ["Cost", "UsageDate", "ResourceGroupName", "ServiceName", "Currency"]
    assert docs[-1]["properties"]["nextLink"] is None
    daily: dict[date, Decimal] = {}
    for doc in docs:
        for row in doc["properties"]["rows"]:
            assert isinstance(row[1], int) and 20250316 <= row[1] <= 20250325
            day = datetime.strptime(str(row[1]), "%Y%m%d").date()
            daily[day] = daily.get(day, Decimal(0)) + row[0]
    expected = _estate_daily(estate, subscription, "BilledCost")
    assert daily == {d: expected[d] for d in daily}
    assert len(daily) == 10
    source.commit("b1")
    rows = {r.day: r for r in cursors.rows("azure")}
    assert {d: r.reported_total for d, r in rows.items()} == daily


def test_throttling_storm_honours_retry_headers_and_total_wait_is_bounded(tmp_path, fake):
    fake.throttle("/query", times=3, qpu_retry_after=2)
    fake.throttle("/query", times=1, qpu_retry_after=None, retry_after=3)
    fake.add_fault(
        Fault("/query", status=503, times=1, body={"error": {"code": "ServiceUnavailable", "message": "busy"}})
    )
    sleeps = Sleeps()
    source = _source(_settings(tmp_path, fake, azure_backfill_days=2), fake, sleep=sleeps, metrics=("ActualCost",))
    chunks = list(source.fetch("b1"))
    assert chunks
    assert sleeps[:4] == [2.0, 2.0, 2.0, 3.0], "QPU header first, then Retry-After"
    assert 16 <= sleeps[4] <= 32, "no header: exponential backoff (5th try: 2 s x 2^4, jittered down to half)"
    assert source.client.stats.throttled == 4 and source.client.stats.server_errors == 1

    # A storm longer than the budget stops with an error instead of waiting forever.
    fake.throttle("/query", times=50, qpu_retry_after=2)
    sleeps = Sleeps()
    stormy = _source(
        _settings(tmp_path, fake, azure_backfill_days=2),
        fake,
        sleep=sleeps,
        metrics=("ActualCost",),
        policy=RetryPolicy(max_attempts=20, max_total_wait=7),
    )
    with pytest.raises(AzureThrottledError, match="budget 7s"):
        list(stormy.fetch("b2"))
    assert sum(sleeps) <= 7


def test_token_is_cached_and_an_expired_token_is_refreshed_once(tmp_path, fake):
    source = _source(_settings(tmp_path, fake, azure_backfill_days=3), fake)
    list(source.fetch("b1"))
    token_posts = [r for r in fake.requests if r.endswith("/oauth2/v2.0/token")]
    assert len(token_posts) == 1, "msal's cache serves the token for every later call"
    fake.expire_tokens()
    chunks = list(source.fetch("b2"))
    assert chunks
    assert source.client.stats.token_refreshes == 1
    assert len([r for r in fake.requests if r.endswith("/oauth2/v2.0/token")]) == 2


def test_token_refused_twice_is_an_auth_error(tmp_path, fake):
    settings = _settings(tmp_path, fake)
    client = ArmClient(settings, session=RoutingSession(fake.base_url), sleep=Sleeps())
    fake.add_fault(
        Fault("/query", status=401, times=2, body={"error": {"code": "InvalidAuthenticationToken", "message": "no"}})
    )
    url = client.url(
        f"/subscriptions/{fake.subscriptions[0]}/providers/Microsoft.CostManagement/query?api-version=2025-03-01"
    )
    with pytest.raises(AzureAuthError, match="Cost Management Reader"):
        client.request("POST", url, json_body={})


@pytest.mark.parametrize(
    ("override", "code", "hint"),
    [
        ({"azure_client_secret": "not-the-s3cret-value"}, "AADSTS7000215", "AZURE_CLIENT_SECRET"),
        ({"azure_client_id": "99999999-0000-0000-0000-000000000000"}, "AADSTS700016", "AZURE_CLIENT_ID"),
    ],
)
def test_wrong_credentials_name_the_aadsts_code_and_what_to_check(tmp_path, fake, override, code, hint):
    source = _source(_settings(tmp_path, fake, **override), fake)
    with pytest.raises(AzureAuthError) as refused:
        list(source.fetch("b1"))
    message = str(refused.value)
    assert code in message and hint in message
    assert "s3cret" not in message, "the secret is never echoed"


def test_fake_validates_query_bodies_like_azure(tmp_path, fake):
    client = ArmClient(_settings(tmp_path, fake), session=RoutingSession(fake.base_url), sleep=Sleeps())
    url = client.url(
        f"/subscriptions/{fake.subscriptions[0]}/providers/Microsoft.CostManagement/query?api-version=2025-03-01"
    )
    body = {
        "type": "ActualCost",
        "timeframe": "Custom",
        "timePeriod": {"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"},
        "dataset": {
            "granularity": "Daily",
            "aggregation": {"Cost": {"name": "Cost", "function": "Sum"}},
            "grouping": [{"type": "Dimension", "name": n} for n in ("ResourceGroupName", "ServiceName", "Meter")],
        },
    }
    with pytest.raises(AzureRequestError, match="no more than 2"):
        client.request("POST", url, json_body=body)
    del body["timePeriod"]
    with pytest.raises(AzureRequestError, match="timePeriod"):
        client.request("POST", url, json_body=body)


def test_cost_details_report_polls_and_reads_gzip_blobs(tmp_path, fake, estate):
    fake.report_polls = 2
    sleeps = Sleeps()
    cursors = MemoryCursorStore()
    source = _source(
        _settings(tmp_path, fake, azure_backfill_days=5), fake, sleep=sleeps, cursors=cursors, mode="cost_details"
    )
    chunks = list(source.fetch("b1"))
    assert any(r.startswith("GET /_blob/") for r in fake.requests)
    assert sleeps.count(1.0) >= 2, "Retry-After of the 202 answers honoured while polling"
    assert all(c.format == PayloadFormat.azure_cost_details and c.content_type == ContentType.csv for c in chunks)
    assert all(int(c.meta["blob_count"]) >= 2 for c in chunks), "the report spans several blobs"
    subscription = fake.subscriptions[0]
    by_metric: dict[str, dict[date, Decimal]] = {}
    for chunk in chunks:
        assert chunk.payload.startswith(b"InvoiceSectionName,AccountName")
        assert chunk.key.startswith(f"{subscription}|2025-03-")
        rows = list(csv.DictReader(io.StringIO(chunk.payload.decode())))
        assert len(rows) == int(chunk.meta["row_count"])
        for row in rows:
            day = datetime.strptime(row["Date"], "%m/%d/%Y").date()
            totals = by_metric.setdefault(chunk.meta["metric"], {})
            totals[day] = totals.get(day, Decimal(0)) + Decimal(row["CostInBillingCurrency"])
    for metric, column in (("ActualCost", "BilledCost"), ("AmortizedCost", "EffectiveCost")):
        expected = _estate_daily(estate, subscription, column)
        assert by_metric[metric] == {d: expected[d] for d in by_metric[metric]}
        assert len(by_metric[metric]) == 5
    source.commit("b1")
    actual = {r.day: r.reported_total for r in cursors.rows("azure") if r.metric == "ActualCost"}
    assert actual == by_metric["ActualCost"]


def test_open_window_start_follows_the_rerating_delay():
    assert open_window_start(datetime(2025, 3, 2, 10, tzinfo=UTC), delay_hours=72) == date(2025, 2, 1)
    assert open_window_start(datetime(2025, 3, 4, 1, tzinfo=UTC), delay_hours=72) == date(2025, 3, 1)
    assert open_window_start(datetime(2025, 3, 1, 5, tzinfo=UTC), delay_hours=0) == date(2025, 3, 1)


def test_open_window_is_refetched_every_run_and_closed_days_only_once(tmp_path, fake, estate):
    settings = _settings(tmp_path, fake, azure_backfill_days=45, azure_open_window_delay_hours=72)
    cursors = MemoryCursorStore()
    early_march = datetime(2025, 3, 2, 10, tzinfo=UTC)
    first = _source(settings, fake, now=early_march, cursors=cursors, metrics=("ActualCost",))
    list(first.fetch("b1"))
    first.commit("b1")
    assert min(w.start for w in first.last_windows) == early_march.date() - timedelta(days=44)
    # Within 72 h of February's end: February and March again, January never.
    second = _source(settings, fake, now=early_march + timedelta(hours=6), cursors=cursors, metrics=("ActualCost",))
    assert list(second.fetch("b2"))
    assert [(w.start, w.end) for w in second.last_windows] == [
        (date(2025, 2, 1), date(2025, 2, 28)),
        (date(2025, 3, 1), date(2025, 3, 2)),
    ]
    second.commit("b2")
    # After the delay, February is closed: only March is fetched again.
    later = datetime(2025, 3, 5, 12, tzinfo=UTC)
    windows = plan_windows(settings, delivered=cursors.delivered("azure"), now=later, metrics=("ActualCost",))
    assert [(w.start, w.end) for w in windows] == [(date(2025, 3, 1), date(2025, 3, 5))]


def test_demo_azure_runs_the_production_connector_against_the_fake(tmp_path, estate):
    from backend.demo.azure_tenant import start_demo_azure

    demo = start_demo_azure(make_settings(tmp_path, azure_backfill_days=3), estate, page_size=500)
    try:
        assert demo.settings.azure_authority_host == "https://login.microsoftonline.com"
        source = AzureCostSource(
            demo.settings, cursors=MemoryCursorStore(), session=demo.session, now=lambda: NOW, sleep=Sleeps()
        )
        chunks = list(source.fetch("demo"))
        assert {c.meta["subscription_id"] for c in chunks} == set(demo.fake.subscriptions)
        assert all(url.startswith(demo.fake.base_url) for url in demo.session.routed)
    finally:
        demo.stop()
