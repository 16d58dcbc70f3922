"""FakeAzure: a local HTTP stand-in for Azure AD and Cost Management, fed by the synthetic estate, with fault injection.

Serves on 127.0.0.1 (one port, in a thread):
- Azure AD: /common/discovery/instance, /<tenant>/v2.0/.well-known/openid-configuration and the v2
  token endpoint (client-credentials; checks client id and secret, answers AADSTS-style errors);
- Cost Management Query API (validates the body like Azure: type, Custom needs timePeriod, Daily /
  Monthly granularity, at most two groupings of known dimensions; answers aggregations, UsageDate as
  yyyymmdd, groupings, Currency; pages with $skiptoken in properties.nextLink);
- Cost Details: generateCostDetailsReport (202 + Location + Retry-After), the operation result, and
  the report blobs (EA-layout CSV, optionally gzip) under /_blob/<account>.blob.core.windows.net/...;
- faults: 429 with Cost Management's retry headers, 5xx, slow answers, expired tokens.

Numbers come from the estate: ActualCost = BilledCost, AmortizedCost = EffectiveCost, so the demo
shows the same totals everywhere. URLs in answers use Azure's real host names; a RoutingSession
(transport.py) brings the connector back here.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from backend.demo.estate import Estate

log = logging.getLogger(__name__)

API_VERSION = "2025-03-01"
LOGIN = "https://login.microsoftonline.com"
MANAGEMENT = "https://management.azure.com"
BLOB_HOST = "ccmreportstoragewestus.blob.core.windows.net"

# Query API dimension -> estate column.
DIMENSIONS = {
    "ResourceGroupName": "x_ResourceGroupName",
    "ResourceGroup": "x_ResourceGroupName",
    "ServiceName": "ServiceName",
    "ServiceFamily": "ServiceCategory",
    "ResourceId": "ResourceId",
    "ResourceType": "x_ResourceType",
    "ResourceLocation": "RegionId",
    "MeterCategory": "x_MeterCategory",
    "MeterSubCategory": "x_MeterSubCategory",
    "Meter": "x_MeterName",
    "MeterId": "x_MeterId",
    "ChargeType": "ChargeCategory",
    "PricingModel": "x_PricingModel",
    "ReservationId": "x_ReservationId",
}
AGGREGATABLE = {"Cost", "PreTaxCost", "CostUSD", "PreTaxCostUSD"}

# Cost Details CSV in the EA layout (dataset schema 2024-08-01), filled from the estate where it knows a value.
COST_DETAILS_COLUMNS = [
    "InvoiceSectionName", "AccountName", "AccountOwnerId", "SubscriptionId", "SubscriptionName", "ResourceGroup",
    "ResourceLocation", "Date", "ProductName", "MeterCategory", "MeterSubCategory", "MeterId", "MeterName",
    "MeterRegion", "UnitOfMeasure", "Quantity", "EffectivePrice", "CostInBillingCurrency", "CostCenter",
    "ConsumedService", "ResourceId", "Tags", "OfferId", "AdditionalInfo", "ServiceInfo1", "ServiceInfo2",
    "ResourceName", "ReservationId", "ReservationName", "UnitPrice", "ProductOrderId", "ProductOrderName", "Term",
    "PublisherType", "PublisherName", "ChargeType", "Frequency", "PricingModel", "AvailabilityZone",
    "BillingAccountId", "BillingAccountName", "BillingCurrencyCode", "BillingPeriodStartDate",
    "BillingPeriodEndDate", "BillingProfileId", "BillingProfileName", "InvoiceSectionId", "IsAzureCreditEligible",
    "PartNumber", "PayGPrice", "PlanName", "ServiceFamily", "CostAllocationRuleName", "benefitId", "benefitName",
]  # fmt: skip


@dataclass
class Fault:
    """Answer the next `times` requests whose "METHOD path" contains `match` with `status` (after `delay` s).
    status None = only delay, then answer normally (a slow response)."""

    match: str
    status: int | None = 429
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: dict[str, Any] | None = None


@dataclass
class _Operation:
    subscription: str
    metric: str
    start: date
    end: date
    polls_left: int
    blobs: list[bytes] | None = None  # [] = the window has no cost data (status NoDataFound)


class FakeAzure:
    """The fake's state and server. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        estate: Estate,
        *,
        tenant_id: str = "00000000-0000-0000-0000-00000000c0de",
        client_id: str = "11111111-2222-3333-4444-555555555555",
        client_secret: str = "fake-client-secret-value",
        page_size: int = 1000,
        token_lifetime: int = 3599,
        report_polls: int = 1,
        report_retry_after: int = 1,
        blob_rows: int = 5000,
        compress_blobs: bool = True,
    ) -> None:
        self.estate = estate
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.token_lifetime = token_lifetime
        self.report_polls = report_polls
        self.report_retry_after = report_retry_after
        self.blob_rows = blob_rows
        self.compress_blobs = compress_blobs
        self.faults: list[Fault] = []
        self.requests: list[str] = []
        self.bodies: list[bytes] = []  # request bodies of Query API calls, in order
        self.tokens: dict[str, float] = {}
        self.operations: dict[str, _Operation] = {}
        self._lock = threading.Lock()
        self._by_sub: dict[str, pa.Table] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.subscriptions = [s.id for s in estate.subscriptions]

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeAzure is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAzure:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-azure", daemon=True)
        self._thread.start()
        log.info("fake Azure listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAzure:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- fault injection -----------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def throttle(self, match: str = "/query", *, times: int = 3, qpu_retry_after: int | None = 1, retry_after=None):
        headers = {}
        if qpu_retry_after is not None:
            headers["x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after"] = str(qpu_retry_after)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        body = {"error": {"code": "429", "message": "Too many requests. Please retry."}}
        self.add_fault(Fault(match, 429, times, headers, body=body))

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as when it expires between cache check and call)."""
        with self._lock:
            self.tokens.clear()

    def take_fault(self, line: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.match in line and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    # --- data ------------------------------------------------------------------------------
    def _sub_table(self, subscription: str) -> pa.Table:
        with self._lock:
            if subscription not in self._by_sub:
                costs = self.estate.costs
                mask = pc.equal(costs["SubAccountId"].cast(pa.string()), f"/subscriptions/{subscription}")
                table = costs.filter(mask)
                day = pc.cast(table["ChargePeriodStart"], pa.date32())
                self._by_sub[subscription] = table.append_column("_day", day)
            return self._by_sub[subscription]

    def _window(self, subscription: str, start: date, end: date) -> pa.Table:
        table = self._sub_table(subscription)
        mask = pc.and_(pc.greater_equal(table["_day"], start), pc.less_equal(table["_day"], end))
        return table.filter(mask)

    def query_rows(self, subscription: str, body: dict) -> tuple[list[dict], list[list]]:
        metric = body["type"]
        period = body["timePeriod"]
        start = date.fromisoformat(period["from"][:10])
        end = date.fromisoformat(period["to"][:10])
        dataset = body["dataset"]
        groups = [DIMENSIONS[g["name"]] for g in dataset.get("grouping", [])]
        value_column = "BilledCost" if metric == "ActualCost" else "EffectiveCost"
        table = self._window(subscription, start, end)
        monthly = dataset.get("granularity") == "Monthly"
        keys = ["_period", *groups]
        period_col = (pc.strftime(table["_day"], "%Y%m01") if monthly else pc.strftime(table["_day"], "%Y%m%d")).cast(
            pa.string()
        )
        work = pa.table(
            {"_period": period_col, **{g: table[g].cast(pa.string()) for g in groups}, "v": table[value_column]}
        )
        summed = work.group_by(keys).aggregate([("v", "sum")]).sort_by([(k, "ascending") for k in keys])
        aggregations = list(dataset.get("aggregation", {}).items())
        columns = [{"name": alias, "type": "Number"} for alias, _ in aggregations]
        columns.append({"name": "BillingMonth" if monthly else "UsageDate", "type": "Number"})
        columns += [{"name": g["name"], "type": "String"} for g in dataset.get("grouping", [])]
        columns.append({"name": "Currency", "type": "String"})
        rows = []
        for record in summed.to_pylist():
            value = record["v_sum"] if record["v_sum"] is not None else Decimal(0)
            row: list = [value for _ in aggregations]
            row.append(int(record["_period"]))
            row += [record[g] or "" for g in groups]
            row.append(self.estate.currency)
            rows.append(row)
        return columns, rows

    def cost_details_blobs(self, op: _Operation) -> list[bytes]:
        table = self._window(op.subscription, op.start, op.end)
        records = table.to_pylist()
        amortized = op.metric == "AmortizedCost"
        lines: list[list[str]] = []
        for r in records:
            unused = r["CommitmentDiscountStatus"] == "Unused"
            if unused and not amortized:
                continue  # unused commitment exists only in amortized data
            charge = r["ChargeCategory"]
            if unused:
                charge = "UnusedReservation" if r["CommitmentDiscountType"] == "Reservation" else "UnusedSavingsPlan"
            tags = r["Tags"]
            legacy_tags = tags[1:-1] if tags and tags.startswith("{") else ""
            cost = r["EffectiveCost"] if amortized else r["BilledCost"]
            values = {
                "AccountName": self.estate.billing_account_name,
                "SubscriptionId": op.subscription,
                "SubscriptionName": r["SubAccountName"],
                "ResourceGroup": r["x_ResourceGroupName"] or "",
                "ResourceLocation": r["RegionId"] or "",
                "Date": r["_day"].strftime("%m/%d/%Y"),
                "ProductName": f"{r['x_MeterCategory']} {r['x_MeterSubCategory']} - {r['x_MeterName']}",
                "MeterCategory": r["x_MeterCategory"],
                "MeterSubCategory": r["x_MeterSubCategory"],
                "MeterId": r["x_MeterId"],
                "MeterName": r["x_MeterName"],
                "UnitOfMeasure": r["PricingUnit"],
                "Quantity": str(r["PricingQuantity"].normalize()),
                "EffectivePrice": str(r["ListUnitPrice"].normalize()),
                "CostInBillingCurrency": str(cost),
                "ResourceId": r["ResourceId"],
                "Tags": legacy_tags,
                "ResourceName": r["ResourceName"],
                "ReservationId": r["x_ReservationId"] or "",
                "UnitPrice": str(r["ListUnitPrice"].normalize()),
                "PublisherName": r["PublisherName"],
                "PublisherType": "Azure",
                "ChargeType": charge,
                "Frequency": "Recurring" if r["ChargeCategory"] == "Purchase" else "UsageBased",
                "PricingModel": r["x_PricingModel"],
                "BillingAccountId": self.estate.billing_account_id,
                "BillingAccountName": self.estate.billing_account_name,
                "BillingCurrencyCode": self.estate.currency,
                "BillingPeriodStartDate": r["BillingPeriodStart"].strftime("%m/%d/%Y"),
                "BillingPeriodEndDate": (r["BillingPeriodEnd"] - timedelta(days=1)).strftime("%m/%d/%Y"),
                "PayGPrice": str(r["ListUnitPrice"].normalize()),
                "ServiceFamily": r["ServiceCategory"],
            }
            lines.append([values.get(c, "") for c in COST_DETAILS_COLUMNS])
        blobs = []
        # No rows: Azure answers the operation with status NoDataFound and no manifest, not an empty blob.
        for offset in range(0, len(lines), self.blob_rows):
            out = io.StringIO(newline="")
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(COST_DETAILS_COLUMNS)
            writer.writerows(lines[offset : offset + self.blob_rows])
            data = b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")
            blobs.append(gzip.compress(data, mtime=0) if self.compress_blobs else data)
        return blobs


def _json_bytes(doc: Any) -> bytes:
    """JSON with Decimals written as numbers carrying every digit (Azure's amounts are not float-rounded)."""

    def default(value: Any) -> str:
        if isinstance(value, Decimal):
            return f"\u0000{value}\u0000"
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(doc, default=default)
    return re.sub(r'"\\u0000([^"\\]*)\\u0000"', r"\1", text).encode()


def _aad_error(error: str, code: int, description: str) -> dict:
    now = datetime.utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
    trace = str(uuid.uuid4())
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nTimestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
        "error_uri": f"{LOGIN}/error?code={code}",
    }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAzure
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake azure: " + format, *args)

    # --- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | dict | None = None, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else _json_bytes(body) if body is not None else b""
        self.send_response(status)
        content_type = "application/json; charset=utf-8"
        if headers and "Content-Type" in headers:
            content_type = headers.pop("Content-Type")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        fake = self.fake
        body = self._body()
        parts = urlsplit(self.path)
        line = f"{method} {parts.path}"
        with fake._lock:
            fake.requests.append(f"{line}?{parts.query}" if parts.query else line)
        fault = fake.take_fault(line)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                default = {"error": {"code": str(fault.status), "message": "Injected fault"}}
                self._send(fault.status, fault.body or default, dict(fault.headers))
                return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            self._route(method, parts.path, query, body)
        except Exception:
            log.exception("fake azure: %s failed", line)
            self._send(500, {"error": {"code": "InternalServerError", "message": "fake failed; see its log"}})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # --- routes ------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        if path == "/common/discovery/instance":
            return self._send(200, self._instance_discovery(query))
        m = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", path)
        if m:
            return self._send(200, self._openid(m.group(1)))
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path)
        if m and method == "POST":
            return self._token(m.group(1), body)
        if path.startswith("/_blob/"):
            return self._blob(path)
        if path.startswith("/subscriptions/"):
            if query.get("api-version") != API_VERSION:
                return self._send(
                    400,
                    {
                        "error": {
                            "code": "InvalidApiVersionParameter",
                            "message": f"The api-version '{query.get('api-version')}' is invalid. "
                            f"The supported versions are '{API_VERSION}'.",
                        }
                    },
                )
            if not self._authorised():
                return None
            m = re.fullmatch(r"/subscriptions/([^/]+)/providers/Microsoft\.CostManagement/query", path)
            if m and method == "POST":
                return self._query(m.group(1), query, body)
            m = re.fullmatch(
                r"/subscriptions/([^/]+)/providers/Microsoft\.CostManagement/generateCostDetailsReport", path
            )
            if m and method == "POST":
                return self._generate(m.group(1), body)
            m = re.fullmatch(
                r"/subscriptions/([^/]+)/providers/Microsoft\.CostManagement/costDetailsOperationResults/([^/]+)",
                path,
            )
            if m and method == "GET":
                return self._operation(m.group(1), m.group(2))
        return self._send(404, {"error": {"code": "NotFound", "message": f"{method} {path} is not served"}})

    def _instance_discovery(self, query: dict[str, str]) -> dict:
        tenant = self.fake.tenant_id
        return {
            "tenant_discovery_endpoint": f"{LOGIN}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [
                {
                    "preferred_network": "login.microsoftonline.com",
                    "preferred_cache": "login.windows.net",
                    "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com"],
                }
            ],
        }

    def _openid(self, tenant: str) -> dict:
        return {
            "token_endpoint": f"{LOGIN}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{LOGIN}/{tenant}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "issuer": f"{LOGIN}/{tenant}/v2.0",
            "authorization_endpoint": f"{LOGIN}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{LOGIN}/{tenant}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{LOGIN}/{tenant}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
        }

    def _token(self, tenant: str, body: bytes) -> None:
        fake = self.fake
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if tenant != fake.tenant_id:
            return self._send(
                400,
                _aad_error(
                    "invalid_request",
                    90002,
                    f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID",
                ),
            )
        if form.get("grant_type") != "client_credentials":
            return self._send(
                400, _aad_error("unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
            )
        if form.get("client_id") != fake.client_id:
            return self._send(
                400,
                _aad_error(
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{form.get('client_id')}' was not found in the directory '{tenant}'.",
                ),
            )
        if form.get("client_secret") != fake.client_secret:
            return self._send(
                401,
                _aad_error(
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                    f"value, not the client secret ID, for a secret added to app '{fake.client_id}'.",
                ),
            )
        if form.get("scope") != "https://management.azure.com/.default":
            return self._send(
                400,
                _aad_error("invalid_scope", 1002012, f"The provided value for scope {form.get('scope')} is not valid."),
            )
        token = base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode().rstrip("=")
        with fake._lock:
            fake.tokens[token] = time.time() + fake.token_lifetime
        return self._send(
            200,
            {
                "token_type": "Bearer",
                "expires_in": fake.token_lifetime,
                "ext_expires_in": fake.token_lifetime,
                "access_token": token,
            },
        )

    def _authorised(self) -> bool:
        fake = self.fake
        header = self.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or not token:
            self._send(
                401,
                {
                    "error": {
                        "code": "AuthenticationFailed",
                        "message": "Authentication failed. The 'Authorization' header is missing.",
                    }
                },
            )
            return False
        with fake._lock:
            expiry = fake.tokens.get(token)
        if expiry is None or expiry < time.time():
            self._send(
                401,
                {
                    "error": {
                        "code": "ExpiredAuthenticationToken",
                        "message": "The access token expiry UTC time is earlier than current UTC time.",
                    }
                },
                {
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'
                },
            )
            return False
        return True

    def _bad(self, message: str) -> None:
        self._send(400, {"error": {"code": "BadRequest", "message": message}})

    def _query(self, subscription: str, query: dict[str, str], raw: bytes) -> None:
        fake = self.fake
        if subscription not in fake.subscriptions:
            return self._send(
                404,
                {
                    "error": {
                        "code": "SubscriptionNotFound",
                        "message": f"The subscription '{subscription}' could not be found.",
                    }
                },
            )
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._bad("The request body is not valid JSON.")
        problem = _validate_query(body)
        if problem:
            return self._bad(f"Invalid query definition: {problem}")
        with fake._lock:
            fake.bodies.append(raw)
        columns, rows = fake.query_rows(subscription, body)
        offset = 0
        if "$skiptoken" in query:
            try:
                offset = int(base64.urlsafe_b64decode(query["$skiptoken"].encode()).decode())
            except ValueError:
                return self._bad("Invalid $skiptoken.")
        page = rows[offset : offset + fake.page_size]
        next_link = None
        if offset + fake.page_size < len(rows):
            token = base64.urlsafe_b64encode(str(offset + fake.page_size).encode()).decode()
            next_link = (
                f"{MANAGEMENT}/subscriptions/{subscription}/providers/Microsoft.CostManagement/query"
                f"?api-version={API_VERSION}&$skiptoken={token}"
            )
        query_id = str(uuid.uuid4())
        return self._send(
            200,
            {
                "id": f"subscriptions/{subscription}/providers/Microsoft.CostManagement/query/{query_id}",
                "name": query_id,
                "type": "Microsoft.CostManagement/query",
                "location": None,
                "sku": None,
                "eTag": None,
                "properties": {"nextLink": next_link, "columns": columns, "rows": page},
            },
            {
                "x-ms-ratelimit-microsoft.costmanagement-qpu-consumed": "1",
                "x-ms-ratelimit-microsoft.costmanagement-qpu-remaining": "None",
            },
        )

    def _generate(self, subscription: str, raw: bytes) -> None:
        fake = self.fake
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._bad("The request body is not valid JSON.")
        metric = body.get("metric")
        if metric not in ("ActualCost", "AmortizedCost"):
            return self._bad("metric must be ActualCost or AmortizedCost.")
        period = body.get("timePeriod") or {}
        try:
            start, end = date.fromisoformat(period["start"]), date.fromisoformat(period["end"])
        except (KeyError, TypeError, ValueError):
            return self._bad("timePeriod with start and end (yyyy-MM-dd) is required.")
        if end < start or (end - start).days > 31:
            return self._bad("The timePeriod must be at most one month and end on or after its start.")
        op_id = str(uuid.uuid4())
        with fake._lock:
            fake.operations[op_id] = _Operation(subscription, metric, start, end, fake.report_polls)
        location = (
            f"{MANAGEMENT}/subscriptions/{subscription}/providers/Microsoft.CostManagement/"
            f"costDetailsOperationResults/{op_id}?api-version={API_VERSION}"
        )
        return self._send(202, None, {"Location": location, "Retry-After": str(fake.report_retry_after)})

    def _operation(self, subscription: str, op_id: str) -> None:
        fake = self.fake
        with fake._lock:
            op = fake.operations.get(op_id)
        if op is None or op.subscription != subscription:
            return self._send(404, {"error": {"code": "NotFound", "message": f"Operation {op_id} not found."}})
        location = (
            f"{MANAGEMENT}/subscriptions/{subscription}/providers/Microsoft.CostManagement/"
            f"costDetailsOperationResults/{op_id}?api-version={API_VERSION}"
        )
        if op.polls_left > 0:
            op.polls_left -= 1
            return self._send(202, None, {"Location": location, "Retry-After": str(fake.report_retry_after)})
        if op.blobs is None:
            op.blobs = fake.cost_details_blobs(op)
        if not op.blobs:
            return self._send(
                200,
                {
                    "id": location.split("?")[0].removeprefix(MANAGEMENT),
                    "name": op_id,
                    "status": "NoDataFound",
                    "validTill": "2099-01-01T00:00:00Z",
                },
            )
        ext = ".csv.gz" if fake.compress_blobs else ".csv"
        blobs = [
            {
                "blobLink": f"https://{BLOB_HOST}/costdetails/{op_id}/part_{i}{ext}?sv=2023-01-03&se=2099-01-01&sr=b&sp=r&sig=fake",
                "byteCount": len(b),
            }
            for i, b in enumerate(op.blobs)
        ]
        return self._send(
            200,
            {
                "id": location.split("?")[0].removeprefix(MANAGEMENT),
                "name": op_id,
                "status": "Completed",
                "manifest": {
                    "manifestVersion": "2024-08-01",
                    "dataFormat": "Csv",
                    "blobCount": len(blobs),
                    "byteCount": sum(b["byteCount"] for b in blobs),
                    "compressData": fake.compress_blobs,
                    "requestContext": {
                        "requestScope": f"subscriptions/{subscription}",
                        "requestBody": {
                            "metric": op.metric,
                            "timePeriod": {"start": op.start.isoformat(), "end": op.end.isoformat()},
                        },
                    },
                    "blobs": blobs,
                },
                "validTill": "2099-01-01T00:00:00Z",
            },
        )

    def _blob(self, path: str) -> None:
        m = re.fullmatch(r"/_blob/[^/]+/costdetails/([^/]+)/part_(\d+)\.csv(\.gz)?", path)
        if not m:
            return self._send(404, b"BlobNotFound", {"Content-Type": "application/xml"})
        if self.headers.get("Authorization"):
            # A SAS link must be fetched without the ARM bearer token (Azure Storage rejects it).
            return self._send(
                400, b"AuthenticationFailed: bearer token sent to a SAS URL", {"Content-Type": "text/plain"}
            )
        with self.fake._lock:
            op = self.fake.operations.get(m.group(1))
        index = int(m.group(2))
        if op is None or index >= len(op.blobs or ()):
            return self._send(404, b"BlobNotFound", {"Content-Type": "application/xml"})
        content_type = "application/gzip" if m.group(3) else "text/csv"
        return self._send(200, op.blobs[index], {"Content-Type": content_type})


def _validate_query(body: dict) -> str:
    """Azure's own checks on a query body; returns the problem or ""."""
    if body.get("type") not in ("ActualCost", "AmortizedCost", "Usage"):
        return "type must be one of ActualCost, AmortizedCost, Usage."
    timeframe = body.get("timeframe")
    if timeframe != "Custom":
        return "this service only answers timeframe Custom (with timePeriod)."
    period = body.get("timePeriod")
    if not isinstance(period, dict) or "from" not in period or "to" not in period:
        return "timePeriod with from and to is required when timeframe is Custom."
    try:
        start = datetime.fromisoformat(period["from"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(period["to"].replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return "timePeriod from and to must be ISO 8601 date-times."
    if end < start or (end - start).days > 366:
        return "timePeriod must span at most one year and end after it starts."
    dataset = body.get("dataset")
    if not isinstance(dataset, dict):
        return "dataset is required."
    if dataset.get("granularity") not in ("Daily", "Monthly", None):
        return "granularity must be Daily or Monthly."
    grouping = dataset.get("grouping") or []
    if len(grouping) > 2:
        return "Dataset grouping must contain no more than 2 elements."
    for g in grouping:
        if g.get("type") != "Dimension" or g.get("name") not in DIMENSIONS:
            return f"grouping {g} is not a supported Dimension."
    aggregation = dataset.get("aggregation") or {}
    if not aggregation:
        return "dataset.aggregation is required."
    for alias, spec in aggregation.items():
        if spec.get("function") != "Sum" or spec.get("name") not in AGGREGATABLE:
            return f"aggregation {alias} must be Sum of one of {sorted(AGGREGATABLE)}."
    return ""
