"""The Azure Cost Management source: Query API pages or Cost Details report CSVs, per subscription and metric, with cursors.

Which days a run fetches, per (subscription, metric): every day of the backfill window
(settings.azure_backfill_days up to today, UTC) that the cursor does not hold yet, plus the open
window — the current month, and the previous month until settings.azure_open_window_delay_hours
after it ends, because Azure re-rates for up to 72 h — every run. Days are fetched in windows that
never cross a month boundary (Cost Details accepts at most one month; pages stay month-sized).

Query API groupings (Azure allows two): ResourceGroupName and ServiceName. The subscription is the
query's scope already; resource group is the ownership unit FinOps users allocate by, service the
"what" they optimise; together they are the two dimensions anomaly detection and the pages slice
by. Everything finer (meters, tags, pricing model, reservation ids) comes from Cost Details.

Chunks are the responses exactly as received: a Query API page's JSON bytes (key "<subscription>"
for a multi-day window, "<subscription>|<day>" for one day), or Cost Details CSV rows cut per
(subscription, day) with the header repeated. meta: source, subscription_id, metric, window_start,
window_end (inclusive ISO dates), page / blob, fetched_at, api_version.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import requests

from backend.config import Settings
from backend.sources.azure.client import ArmClient, AzureError, RetryPolicy
from backend.sources.base import ContentType, PayloadFormat, RawChunk
from backend.sources.cursors import CursorRow, CursorStore
from backend.sources.files import FileRefusedError, prepare_csv_bytes

log = logging.getLogger(__name__)

API_VERSION = "2025-03-01"
METRICS = ("ActualCost", "AmortizedCost")
GROUPING = ("ResourceGroupName", "ServiceName")
SOURCE = "azure"


# Everything the source needs to read a real tenant; none has a usable default.
REQUIRED_SETTINGS = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_IDS")
NOT_CONFIGURED, CONFIGURED, MISCONFIGURED = "not configured", "configured", "misconfigured"


class AzureConfigError(AzureError):
    """Azure is half configured: some of REQUIRED_SETTINGS are set, the rest are named in the message."""


@dataclass(frozen=True)
class AzureConfig:
    """Whether the Azure source can run: not configured (nothing set, not a failure), configured, or
    misconfigured (some settings set, `missing` names the rest). Holds names and counts, never a secret."""

    state: str
    missing: tuple[str, ...] = ()
    subscriptions: int = 0

    @property
    def message(self) -> str:
        if self.state == CONFIGURED:
            return f"configured ({self.subscriptions} subscription{'s' if self.subscriptions != 1 else ''})"
        if self.state == NOT_CONFIGURED:
            return f"not configured: set {_and(REQUIRED_SETTINGS)}"
        hint = " (comma-separated subscription ids)" if "AZURE_SUBSCRIPTION_IDS" in self.missing else ""
        # Both ways out are named: the user may have meant to drop Azure rather than finish configuring it.
        return (
            f"misconfigured: set {_and(self.missing)}{hint}, or unset the other AZURE_* settings to run without Azure"
        )


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def azure_config(settings: Settings) -> AzureConfig:
    """Which of REQUIRED_SETTINGS are set; blank values count as unset (an empty line in .env is not a value)."""
    secret = settings.azure_client_secret.get_secret_value() if settings.azure_client_secret else ""
    present = {
        "AZURE_TENANT_ID": bool(settings.azure_tenant_id.strip()),
        "AZURE_CLIENT_ID": bool(settings.azure_client_id.strip()),
        "AZURE_CLIENT_SECRET": bool(secret.strip()),
        "AZURE_SUBSCRIPTION_IDS": bool(settings.azure_subscription_ids),
    }
    missing = tuple(name for name in REQUIRED_SETTINGS if not present[name])
    if len(missing) == len(REQUIRED_SETTINGS):
        return AzureConfig(NOT_CONFIGURED, missing)
    if missing:
        return AzureConfig(MISCONFIGURED, missing, len(settings.azure_subscription_ids))
    return AzureConfig(CONFIGURED, (), len(settings.azure_subscription_ids))


@dataclass(frozen=True)
class Window:
    subscription: str
    metric: str
    start: date
    end: date  # inclusive

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


def open_window_start(now: datetime, *, delay_hours: int) -> date:
    """First day Azure may still change: this month's first, or last month's until `delay_hours` after it ended."""
    month_start = now.date().replace(day=1)
    if now < datetime(month_start.year, month_start.month, 1, tzinfo=UTC) + timedelta(hours=delay_hours):
        return (month_start - timedelta(days=1)).replace(day=1)
    return month_start


def plan_windows(
    settings: Settings, *, delivered: set[tuple[str, str, date]], now: datetime, metrics=METRICS
) -> list[Window]:
    today = now.date()
    first = today - timedelta(days=settings.azure_backfill_days - 1)
    reopen = open_window_start(now, delay_hours=settings.azure_open_window_delay_hours)
    windows: list[Window] = []
    for subscription in settings.azure_subscription_ids:
        for metric in metrics:
            days = [
                first + timedelta(days=i)
                for i in range((today - first).days + 1)
                if first + timedelta(days=i) >= reopen
                or (subscription, metric, first + timedelta(days=i)) not in delivered
            ]
            run: list[date] = []
            for day in days:
                if run and (day != run[-1] + timedelta(days=1) or day.month != run[-1].month):
                    windows.append(Window(subscription, metric, run[0], run[-1]))
                    run = []
                run.append(day)
            if run:
                windows.append(Window(subscription, metric, run[0], run[-1]))
    return windows


def query_body(window: Window) -> dict:
    return {
        "type": window.metric,
        "timeframe": "Custom",
        "timePeriod": {
            "from": f"{window.start.isoformat()}T00:00:00+00:00",
            "to": f"{window.end.isoformat()}T23:59:59+00:00",
        },
        "dataset": {
            "granularity": "Daily",
            # The alias is the column name in the answer; "Cost" either way.
            "aggregation": {"Cost": {"name": "Cost", "function": "Sum"}},
            "grouping": [{"type": "Dimension", "name": name} for name in GROUPING],
        },
    }


class AzureCostSource:
    """CostSource over Azure Cost Management (mode "query" or "cost_details")."""

    name = SOURCE

    def __init__(
        self,
        settings: Settings,
        *,
        cursors: CursorStore,
        mode: str = "query",
        metrics: tuple[str, ...] = METRICS,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_report_polls: int = 120,
    ) -> None:
        if mode not in ("query", "cost_details"):
            raise ValueError("mode must be 'query' or 'cost_details'")
        config = azure_config(settings)
        if config.state != CONFIGURED:
            raise AzureConfigError(f"Azure source {config.message}")
        self.settings = settings
        self.cursors = cursors
        self.mode = mode
        self.metrics = metrics
        self.sleep = sleep
        self.now = now
        self.max_report_polls = max_report_polls
        self.client = ArmClient(settings, session=session, policy=policy, sleep=sleep)
        self.last_windows: list[Window] = []

    def fetch(self, batch_id: str) -> Iterator[RawChunk]:
        now = self.now()
        self.last_windows = plan_windows(
            self.settings, delivered=self.cursors.delivered(SOURCE), now=now, metrics=self.metrics
        )
        cursor_rows: list[CursorRow] = []
        chunks = 0
        for window in self.last_windows:
            fetch = self._query if self.mode == "query" else self._cost_details
            totals: dict[date, tuple[int, Decimal, str | None]] = {d: (0, Decimal(0), None) for d in window.days}
            for chunk in fetch(window, totals):
                chunk.meta["batch_id"] = batch_id
                chunks += 1
                yield chunk
            fetched_at = datetime.now(UTC)
            cursor_rows += [
                CursorRow(SOURCE, window.subscription, window.metric, day, fetched_at, rows, total, currency)
                for day, (rows, total, currency) in totals.items()
            ]
        self.cursors.stage(batch_id, SOURCE, cursor_rows, chunk_count=chunks)
        log.info(
            "azure batch %s: %d window(s), %d chunk(s), %d request(s), %d retries, %.1fs waited",
            batch_id,
            len(self.last_windows),
            chunks,
            self.client.stats.requests,
            self.client.stats.retries,
            self.client.stats.waited_seconds,
        )

    def commit(self, batch_id: str) -> None:
        self.cursors.commit(batch_id)

    def _meta(self, window: Window, **extra: str) -> dict[str, str]:
        return {
            "source": SOURCE,
            "subscription_id": window.subscription,
            "metric": window.metric,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "fetched_at": datetime.now(UTC).isoformat(),
            "api_version": API_VERSION,
            **extra,
        }

    # --- Query API ---------------------------------------------------------------------------
    def _query(self, window: Window, totals: dict) -> Iterator[RawChunk]:
        body = query_body(window)
        url: str | None = self.client.url(
            f"/subscriptions/{window.subscription}/providers/Microsoft.CostManagement/query?api-version={API_VERSION}"
        )
        key = window.subscription if window.start != window.end else f"{window.subscription}|{window.start}"
        page = 0
        while url:
            # Paging: the same body POSTed to properties.nextLink until there is none.
            response = self.client.request("POST", url, json_body=body)
            payload = response.content
            doc = json.loads(payload, parse_float=Decimal, parse_int=Decimal)
            properties = doc.get("properties") or {}
            names = [c["name"] for c in properties.get("columns", [])]
            rows = properties.get("rows", [])
            self._tally(names, rows, totals, window)
            yield RawChunk(
                source=SOURCE,
                format=PayloadFormat.azure_query,
                content_type=ContentType.json,
                key=key,
                payload=payload,
                meta=self._meta(window, page=str(page), row_count=str(len(rows)), grouping=",".join(GROUPING)),
            )
            page += 1
            url = properties.get("nextLink") or None

    @staticmethod
    def _tally(names: list[str], rows: list[list], totals: dict, window: Window) -> None:
        """Per-day row counts and exact totals of the Cost column, for the cursor's reconciliation fields."""
        try:
            i_day, i_cost = names.index("UsageDate"), names.index("Cost")
        except ValueError:
            raise AzureError(
                f"Query API answer for {window.subscription} lacks UsageDate or Cost columns (got {names})"
            ) from None
        i_cur = names.index("Currency") if "Currency" in names else None
        for row in rows:
            text = str(int(row[i_day]))
            day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
            count, total, currency = totals.get(day, (0, Decimal(0), None))
            totals[day] = (
                count + 1,
                total + Decimal(row[i_cost]),
                currency or (row[i_cur] if i_cur is not None else None),
            )

    # --- Cost Details report --------------------------------------------------------------------
    def _cost_details(self, window: Window, totals: dict) -> Iterator[RawChunk]:
        url = self.client.url(
            f"/subscriptions/{window.subscription}/providers/Microsoft.CostManagement/"
            f"generateCostDetailsReport?api-version={API_VERSION}"
        )
        body = {
            "metric": window.metric,
            "timePeriod": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        }
        response = self.client.request("POST", url, json_body=body)
        polls = 0
        while response.status_code == 202:
            location = response.headers.get("Location") or response.headers.get("Azure-AsyncOperation")
            if not location:
                raise AzureError(f"Cost Details report for {window.subscription} answered 202 without a Location")
            polls += 1
            if polls > self.max_report_polls:
                raise AzureError(
                    f"Cost Details report for {window.subscription} {window.start}..{window.end} not ready after "
                    f"{self.max_report_polls} polls; try again later"
                )
            self.sleep(float(response.headers.get("Retry-After") or 5))
            response = self.client.request("GET", location)
        doc = response.json()
        status = doc.get("status")
        if status == "NoDataFound":
            # A window without cost (a new or emptied subscription, a day not billed yet): zero rows,
            # and the cursor records those days as fetched with nothing in them.
            log.info(
                "Cost Details %s %s %s..%s: no cost data", window.subscription, window.metric, window.start, window.end
            )
            return
        if status != "Completed":
            raise AzureError(
                f"Cost Details report for {window.subscription} ended with status {status}: {doc.get('error')}"
            )
        manifest = doc.get("manifest") or {}
        for index, blob in enumerate(manifest.get("blobs", [])):
            # SAS links: fetched without the ARM token.
            data = self.client.request("GET", blob["blobLink"], authenticated=False).content
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            if not data.partition(b"\n")[2].strip():
                continue  # a header and no rows: nothing in this blob (seen on otherwise empty reports)
            name = f"costdetails-{window.subscription}-{window.metric}-{window.start}-{index}.csv"
            try:
                prepared = prepare_csv_bytes(data, self.settings, name=name, metric=window.metric)
            except FileRefusedError as exc:
                raise AzureError(f"Cost Details blob {index} for {window.subscription} is unreadable: {exc}") from None
            # A subscription bills in one currency: its blobs' totals sum per day.
            for (_scope, day, _currency), group in prepared.totals.items():
                if day is None:
                    continue
                count, total, currency = totals.get(day, (0, Decimal(0), None))
                totals[day] = (count + group.rows, total + group.cost, currency or group.currency)
            for chunk in prepared.chunks:
                # The chunk holds one (subscription, day): its own day, and the report's window beside it.
                meta = self._meta(
                    window,
                    blob=str(index),
                    blob_count=str(len(manifest["blobs"])),
                    blob_sha256=prepared.sha256,
                    report_start=window.start.isoformat(),
                    report_end=window.end.isoformat(),
                )
                for name in ("row_count", "chunk_index", "chunk_count", "window_start", "window_end"):
                    if name in chunk.meta:
                        meta[name] = chunk.meta[name]
                yield RawChunk(
                    source=SOURCE,
                    format=PayloadFormat.azure_cost_details,
                    content_type=ContentType.csv,
                    key=chunk.key,
                    payload=chunk.payload,
                    meta=meta,
                )
