"""Explode bronze payloads (Query API JSON pages, Azure CSV reports, FOCUS CSV/Parquet) into string rows with one mapping per format."""

from __future__ import annotations

import base64
import csv
import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from backend.sources.ids import canonical_subscription_id

log = logging.getLogger(__name__)

# Canonical staging fields: every format is renamed onto these, all as strings, so nothing is
# coerced before validation (typed casts and rules happen in Spark, see silver.py).
STAGING_FIELDS: tuple[str, ...] = (
    "charge_date",
    "charge_period_start",
    "charge_period_end",
    "billing_account_id",
    "billing_account_name",
    "sub_account_id",
    "sub_account_name",
    "resource_id",
    "resource_name",
    "resource_type",
    "region",
    "service_name",
    "service_category",
    "charge_category",
    "charge_class",
    "charge_description",
    "pricing_category",
    "pricing_model",
    "commitment_discount_id",
    "commitment_discount_type",
    "pricing_quantity",
    "pricing_unit",
    "cost",  # Azure reports: the one cost column; its meaning (actual / amortized) comes from meta.metric
    "billed_cost",
    "effective_cost",
    "list_cost",
    "contracted_cost",
    "list_unit_price",
    "billing_currency",
    "tags_raw",  # not "tags": Spark resolves names case-insensitively and silver has "Tags"
    "resource_group",
    "meter_category",
    "meter_subcategory",
    "meter_name",
    "meter_id",
    # FOCUS 1.0-1.3 columns kept through silver, gold and the mart (where they fit).
    "provider_name",
    "publisher_name",
    "invoice_issuer_name",
    "service_provider_name",  # 1.3 (ProviderName before)
    "host_provider_name",  # 1.3
    "billing_account_type",
    "sub_account_type",
    "invoice_id",
    "pricing_currency",
    "pricing_currency_effective_cost",
    "pricing_currency_list_unit_price",
    "pricing_currency_contracted_unit_price",
    "commitment_discount_category",
    "commitment_discount_name",
    "commitment_discount_status",
    "commitment_discount_quantity",
    "commitment_discount_unit",
    "capacity_reservation_id",
    "capacity_reservation_status",
    "sku_id",
    "sku_price_id",
    "sku_meter",
    "service_subcategory",
    "allocated_method_id",
    "allocated_method_details",
    "allocated_resource_id",
    "allocated_resource_name",
    "allocated_tags",
)

# Lineage and context added to every exploded row (from the bronze row it came from).
LINEAGE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row_index", pa.int64()),  # position in the payload; -1 for a whole-message parse failure
    ("source_format", pa.string()),
    ("source", pa.string()),
    ("metric", pa.string()),
    ("meta_subscription_id", pa.string()),
    # A file's rows are one part of a delivery (its sha256); "add" when the file adds rows to what silver
    # holds for its days (a part file) instead of replacing them (a re-delivery). Null for API pulls.
    ("delivery_part", pa.string()),
    ("delivery_id", pa.string()),  # the replacement unit: a manifest's run id, else the file
    ("delivery_mode", pa.string()),
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("batch_id", pa.string()),
    ("bronze_run_id", pa.string()),
    ("fetched_at", pa.timestamp("us", tz="UTC")),
    ("parse_error", pa.string()),  # set only on a whole-message failure row
    ("raw_payload", pa.string()),  # the undecodable payload (text, or base64 for binary), failures only
)

TAGS_TYPE = pa.map_(pa.string(), pa.string())

# Values read from the text once per distinct value, on the way out of the decoder: a payload repeats
# its day, its subscription and each resource's tags on every row, so a parse per row in the engine
# (regexes, JSON) cost more than the rest of validation together. Null when absent or unreadable;
# silver's rules tell the two apart by the text.
DERIVED_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("charge_day", pa.date32()),  # charge_date, else charge_period_start (see `charge_day`)
    ("sub_account", pa.string()),  # sub_account_id, else the message's subscription, canonical
    ("tags", TAGS_TYPE),  # tags_raw parsed and normalised (see `parse_tags`)
)

TEXT_SCHEMA = pa.schema([(name, pa.string()) for name in STAGING_FIELDS] + list(LINEAGE_FIELDS))
STAGING_SCHEMA = pa.schema([*TEXT_SCHEMA, *DERIVED_FIELDS])

# Bronze columns the parser needs (a projection keeps the scan small).
BRONZE_INPUT_COLUMNS = [
    "topic",
    "partition",
    "offset",
    "format",
    "content_type",
    "source",
    "batch_id",
    "fetched_at",
    "meta",
    "payload",
    "run_id",
]

# --- one mapping per format: staging field -> candidate source columns (matched case-insensitively, first wins)
AZURE_DETAIL_MAP: dict[str, tuple[str, ...]] = {
    "charge_date": ("Date", "UsageDate", "UsageDateTime"),
    "billing_account_id": ("BillingAccountId", "EnrollmentNumber"),
    "billing_account_name": ("BillingAccountName",),
    "sub_account_id": ("SubscriptionId", "SubscriptionGuid"),
    "sub_account_name": ("SubscriptionName",),
    "resource_id": ("ResourceId", "InstanceId", "InstanceName"),
    "resource_name": ("ResourceName",),
    "resource_type": ("ResourceType",),
    "region": ("ResourceLocation", "Location", "MeterRegion"),
    "charge_category": ("ChargeType",),
    "charge_description": ("ProductName", "Product"),
    "pricing_model": ("PricingModel",),
    "commitment_discount_id": ("BenefitId", "ReservationId"),
    "pricing_quantity": ("Quantity", "ConsumedQuantity", "UsageQuantity"),
    "pricing_unit": ("UnitOfMeasure",),
    "cost": ("CostInBillingCurrency", "Cost", "PreTaxCost", "ExtendedCost"),
    "list_cost": ("PaygCostInBillingCurrency",),
    "list_unit_price": ("PayGPrice",),
    "billing_currency": ("BillingCurrency", "BillingCurrencyCode", "Currency"),
    "tags_raw": ("Tags",),
    "resource_group": ("ResourceGroup", "ResourceGroupName"),
    "meter_category": ("MeterCategory",),
    "meter_subcategory": ("MeterSubCategory",),
    "meter_name": ("MeterName",),
    "meter_id": ("MeterId",),
    "publisher_name": ("PublisherName",),
    "invoice_id": ("InvoiceId",),
    "pricing_currency": ("PricingCurrency", "PricingCurrencyCode"),
    "pricing_currency_effective_cost": ("CostInPricingCurrency",),
    "pricing_currency_list_unit_price": ("PayGPrice",),
    "pricing_currency_contracted_unit_price": ("UnitPrice",),
    "commitment_discount_name": ("BenefitName", "ReservationName"),
    "sku_id": ("ProductId", "PartNumber"),
    "sku_meter": ("MeterName",),
    "service_subcategory": ("MeterSubCategory",),
}

FOCUS_MAP: dict[str, tuple[str, ...]] = {
    "charge_period_start": ("ChargePeriodStart",),
    "charge_period_end": ("ChargePeriodEnd",),
    "billing_account_id": ("BillingAccountId",),
    "billing_account_name": ("BillingAccountName",),
    "sub_account_id": ("SubAccountId",),
    "sub_account_name": ("SubAccountName",),
    "resource_id": ("ResourceId",),
    "resource_name": ("ResourceName",),
    "resource_type": ("ResourceType",),
    "region": ("RegionName", "RegionId"),
    "service_name": ("ServiceName",),
    "service_category": ("ServiceCategory",),
    "charge_category": ("ChargeCategory",),
    "charge_class": ("ChargeClass",),
    "charge_description": ("ChargeDescription",),
    "pricing_category": ("PricingCategory",),
    "pricing_model": ("x_PricingModel",),
    "commitment_discount_id": ("CommitmentDiscountId",),
    "commitment_discount_type": ("CommitmentDiscountType",),
    "pricing_quantity": ("PricingQuantity", "ConsumedQuantity"),
    "pricing_unit": ("PricingUnit", "ConsumedUnit"),
    "billed_cost": ("BilledCost",),
    "effective_cost": ("EffectiveCost",),
    "list_cost": ("ListCost",),
    "contracted_cost": ("ContractedCost",),
    "list_unit_price": ("ListUnitPrice",),
    "billing_currency": ("BillingCurrency",),
    "tags_raw": ("Tags",),
    "resource_group": ("x_ResourceGroupName", "ResourceGroupName"),
    "meter_category": ("x_MeterCategory", "x_SkuMeterCategory"),
    "meter_subcategory": ("x_MeterSubCategory", "x_MeterSubcategory", "x_SkuMeterSubcategory"),
    "meter_name": ("x_MeterName", "x_SkuMeterName", "SkuMeter"),
    "meter_id": ("x_MeterId", "x_SkuMeterId", "SkuId"),
    # Versions rename columns: every spelling maps to one name (first present wins).
    "provider_name": ("ProviderName", "ServiceProviderName"),  # 1.3 deprecates ProviderName
    "publisher_name": ("PublisherName",),
    "invoice_issuer_name": ("InvoiceIssuerName", "InvoiceIssuer"),
    "service_provider_name": ("ServiceProviderName", "ProviderName"),
    "host_provider_name": ("HostProviderName",),
    "billing_account_type": ("BillingAccountType", "x_BillingAccountType"),
    "sub_account_type": ("SubAccountType", "x_SubAccountType"),
    "invoice_id": ("InvoiceId", "x_InvoiceId"),
    "pricing_currency": ("PricingCurrency", "x_PricingCurrency"),
    "pricing_currency_effective_cost": ("PricingCurrencyEffectiveCost", "x_EffectiveCostInPricingCurrency"),
    "pricing_currency_list_unit_price": ("PricingCurrencyListUnitPrice", "x_ListUnitPriceInPricingCurrency"),
    "pricing_currency_contracted_unit_price": (
        "PricingCurrencyContractedUnitPrice",
        "x_ContractedUnitPriceInPricingCurrency",
    ),
    "commitment_discount_category": ("CommitmentDiscountCategory",),
    "commitment_discount_name": ("CommitmentDiscountName",),
    "commitment_discount_status": ("CommitmentDiscountStatus",),
    "commitment_discount_quantity": ("CommitmentDiscountQuantity",),
    "commitment_discount_unit": ("CommitmentDiscountUnit",),
    "capacity_reservation_id": ("CapacityReservationId",),
    "capacity_reservation_status": ("CapacityReservationStatus",),
    "sku_id": ("SkuId",),
    "sku_price_id": ("SkuPriceId",),
    "sku_meter": ("SkuMeter", "x_SkuMeterName"),
    "service_subcategory": ("ServiceSubcategory", "x_ServiceSubcategory"),
    "allocated_method_id": ("AllocatedMethodId",),
    "allocated_method_details": ("AllocatedMethodDetails",),
    "allocated_resource_id": ("AllocatedResourceId",),
    "allocated_resource_name": ("AllocatedResourceName",),
    "allocated_tags": ("AllocatedTags",),
}

# Query API columns (the grouping dimensions vary per request; at most two plus the date and cost).
AZURE_QUERY_MAP: dict[str, tuple[str, ...]] = {
    "charge_date": ("UsageDate", "BillingMonth"),
    "cost": ("Cost", "PreTaxCost", "CostUSD", "TotalCost"),
    "billing_currency": ("Currency",),
    "sub_account_id": ("SubscriptionId",),
    "sub_account_name": ("SubscriptionName",),
    "resource_group": ("ResourceGroupName", "ResourceGroup"),
    "service_name": ("ServiceName",),
    "meter_category": ("MeterCategory",),
    "meter_subcategory": ("MeterSubCategory",),
    "meter_name": ("Meter", "MeterName"),
    "meter_id": ("MeterId",),
    "region": ("ResourceLocation",),
    "resource_id": ("ResourceId",),
    "resource_type": ("ResourceType",),
    "charge_category": ("ChargeType",),
    "pricing_model": ("PricingModel",),
    "commitment_discount_id": ("BenefitId", "ReservationId"),
    "pricing_quantity": ("UsageQuantity",),
}

FORMAT_MAPS: dict[str, dict[str, tuple[str, ...]]] = {
    "azure_query": AZURE_QUERY_MAP,
    "azure_cost_details": AZURE_DETAIL_MAP,
    "azure_export_ea": AZURE_DETAIL_MAP,
    "azure_export_mca": AZURE_DETAIL_MAP,
    "focus": FOCUS_MAP,
}

BOM = b"\xef\xbb\xbf"


class PayloadError(ValueError):
    """A payload that cannot be decoded at all (quarantined as one row with the raw payload)."""


# What a broken payload raises while decoding. OSError: pyarrow reports a corrupt Parquet data page
# ("corrupt data page?") as a plain OSError, not an ArrowException.
DECODE_ERRORS = (PayloadError, ValueError, KeyError, TypeError, pa.ArrowException, UnicodeDecodeError, OSError)


# A string array's offsets are 32-bit: a column is combined into one array only well below 2 GB.
_COMBINE_BYTES = 1 << 30


def _as_strings(table: pa.Table) -> pa.Table:
    """Every column as string: nested values as JSON text, "" and the literal "NULL" (FOCUS) as null."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            values = [
                None if v is None else json.dumps(_jsonable(v), separators=(",", ":")) for v in column.to_pylist()
            ]
            columns.append(pa.chunked_array([pa.array(values, pa.string())]))
        elif pa.types.is_temporal(column.type):
            # Formatting a zoned timestamp looks its zone up per value (a third of the decode's time); a
            # file has few distinct days, so only the distinct values are formatted. Same text.
            encoded = pc.dictionary_encode(column).combine_chunks()
            columns.append(pc.take(encoded.dictionary.cast(pa.string()), encoded.indices))
        elif not pa.types.is_string(column.type):
            column = column.cast(pa.large_string() if pa.types.is_large_string(column.type) else pa.string())
            columns.append(column.cast(pa.string()))  # a number's text is never blank
        else:
            # One array per column: the blank test costs per kernel call, and a group has a chunk per payload.
            chunks = [column.combine_chunks()] if column.nbytes < _COMBINE_BYTES else column.chunks
            columns.append(pa.chunked_array([_null_blanks(chunk) for chunk in chunks], pa.string()))
    return pa.table(columns, names=table.column_names)


def _blank(values: pa.Array) -> pa.Array:
    """Empty, only whitespace, or "NULL" in any case. The byte length is free (it reads the offsets); only
    a value of four bytes can spell NULL (n, u and l have no non-ASCII case variants), so few are case-folded."""
    length = pc.binary_length(values)
    spaces = pc.or_(pc.equal(length, 0), pc.utf8_is_space(values))
    return pc.or_(spaces, pc.and_(pc.equal(length, 4), pc.match_like(values, "null", ignore_case=True)))


def _null_blanks(values: pa.StringArray) -> pa.Array:
    """`values` with blank values made null. The new validity bitmap is put over the same offsets and bytes
    (no copy of the strings: a copy was a third of the decode's string work)."""
    keep = pc.and_kleene(pc.is_valid(values), pc.invert(_blank(values)))  # false where null: never null itself
    if values.offset or keep.offset or keep.null_count:
        return pc.if_else(keep, values, pa.scalar(None, pa.string()))
    _, offsets, data = values.buffers()
    return pa.Array.from_buffers(pa.string(), len(values), [keep.buffers()[1], offsets, data])


def _jsonable(value):
    # Parquet maps arrive as lists of (key, value) tuples.
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return {str(k): v for k, v in value}
    return value


# Payloads are decoded on one thread each (`use_threads=False`, from an in-memory buffer rather than a Python
# file object): the engine already runs one decode per core, and pyarrow's own thread pool on top of that
# cost 40% more CPU for the same Parquet reads on two cores.


def read_csv(payload: bytes) -> pa.Table:
    """CSV bytes with every column read as string (header from the first line, BOM dropped)."""
    if payload.startswith(BOM):
        payload = payload[len(BOM) :]
    if not payload.strip():
        return pa.table({})
    header_line = payload.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    names = next(csv.reader([header_line]))
    if len(set(names)) != len(names):
        raise PayloadError(f"duplicate CSV header names: {names}")
    return pacsv.read_csv(
        pa.BufferReader(payload),
        read_options=pacsv.ReadOptions(use_threads=False),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )


def read_query_page(payload: bytes) -> pa.Table:
    """One Query API response page -> table of strings (numbers kept as their exact JSON text)."""
    doc = json.loads(payload, parse_float=str, parse_int=str)
    props = doc.get("properties") if isinstance(doc, dict) else None
    if not isinstance(props, dict) or "columns" not in props or "rows" not in props:
        raise PayloadError("not a Cost Management query response (properties.columns/rows missing)")
    names = [c["name"] for c in props["columns"]]
    rows = props["rows"] or []
    for row in rows:
        if len(row) != len(names):
            raise PayloadError(f"query row has {len(row)} values for {len(names)} columns")
    columns = {
        name: pa.array([None if r[i] is None else str(r[i]) for r in rows], pa.string()) for i, name in enumerate(names)
    }
    return pa.table(columns) if names else pa.table({})


def read_payload(source_format: str, content_type: str, payload: bytes) -> pa.Table:
    """The payload's rows as a table of strings, columns named as in the source."""
    if source_format == "azure_query":
        return read_query_page(payload)
    if source_format in FORMAT_MAPS:
        if "parquet" in (content_type or "") or payload[:4] == b"PAR1":
            # Only the mapped columns: a FOCUS file has ~50, silver needs ~35 (half the decode work).
            parquet = pq.ParquetFile(pa.BufferReader(payload))
            wanted = _wanted_columns(tuple(parquet.schema_arrow.names), source_format)
            return parquet.read(columns=wanted, use_threads=False)
        return read_csv(payload)
    raise PayloadError(f"unknown payload format {source_format!r}")


def chosen_columns(names: list[str], mapping: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """staging field -> the source column that feeds it (first candidate present, case-insensitive)."""
    by_lower = {name.lower(): name for name in names}
    chosen = {}
    for field in STAGING_FIELDS:
        hit = next((by_lower[c.lower()] for c in mapping.get(field, ()) if c.lower() in by_lower), None)
        if hit is not None:
            chosen[field] = hit
    return chosen


@functools.lru_cache(maxsize=256)
def _wanted_columns(names: tuple[str, ...], source_format: str) -> list[str]:
    # Cached: the payloads of one export share a layout, and the choice cost as much as a small payload's read.
    return sorted(set(chosen_columns(list(names), FORMAT_MAPS[source_format]).values()))


def map_columns(raw: pa.Table, source_format: str) -> pa.Table:
    """Rename a source table onto STAGING_FIELDS with the format's mapping (missing fields are null)."""
    chosen = chosen_columns(raw.column_names, FORMAT_MAPS[source_format])
    used = sorted(set(chosen.values()))
    strings = _as_strings(raw.select(used))
    n = raw.num_rows
    columns = [strings.column(chosen[f]) if f in chosen else pa.nulls(n, pa.string()) for f in STAGING_FIELDS]
    return pa.table(columns, names=list(STAGING_FIELDS))


# --- values derived from the text -----------------------------------------------------------------
# Spark's rules spelt in Python: `trim` strips the space character only; digits are ASCII.
_ISO_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_US_DAY = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")  # Azure EA: MM/DD/YYYY
_COMPACT_DAY = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:\.0+)?")  # Query API yyyymmdd (Excel adds ".0")


def charge_day(text: str | None) -> date | None:
    """The charge day of an ISO date (with or without a time), MM/DD/YYYY or yyyymmdd; None when unreadable
    (2026-02-31 included)."""
    if text is None:
        return None
    first = re.split("[ T]", text.strip(" "), maxsplit=1)[0]
    for pattern, year, month, day in ((_ISO_DAY, 1, 2, 3), (_US_DAY, 3, 1, 2), (_COMPACT_DAY, 1, 2, 3)):
        found = pattern.fullmatch(first)
        if found:
            try:
                return date(int(found.group(year)), int(found.group(month)), int(found.group(day)))
            except ValueError:
                return None
    return None


def parse_tags(text: str | None) -> list[tuple[str, str | None]] | None:
    """Tags text -> (key, value) pairs: keys trimmed and case-folded, values trimmed, blank keys dropped; keys
    that collide once folded keep the last value. Legacy EA tags lack the braces (`"env": "prod","team": "x"`).
    None when the text is not a JSON object (the row is quarantined as invalid_tags)."""
    if text is None:
        return None
    trimmed = text.strip(" ")
    try:
        # A repeated key keeps its last value, as a JSON object read into a dict does.
        parsed = json.loads(trimmed if trimmed.startswith("{") else "{" + trimmed + "}", parse_float=str, parse_int=str)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    tags: dict[str, str | None] = {}
    for key, value in parsed.items():
        folded = key.strip(" ").lower()
        if folded:
            tags.pop(folded, None)  # the last one wins, in its own position
            tags[folded] = _tag_text(value)
    return list(tags.items())


def _tag_text(value) -> str | None:
    # Numbers arrive as their text ("42", "1.50"); a nested object or array becomes its compact JSON.
    if value is None or isinstance(value, str):
        return None if value is None else value.strip(" ")
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _per_value(values: pa.ChunkedArray, parse: Callable, kind: pa.DataType) -> pa.ChunkedArray:
    """`parse` applied once per distinct value of a string column, the results spread back over the rows."""
    out = []
    for chunk in values.chunks:
        encoded = pc.dictionary_encode(chunk)
        results = pa.array([parse(v) for v in encoded.dictionary.to_pylist()], kind)
        out.append(results.take(encoded.indices))
    return pa.chunked_array(out, kind)


def derive(table: pa.Table) -> pa.Table:
    """A TEXT_SCHEMA table -> the same rows on STAGING_SCHEMA, with DERIVED_FIELDS read from the text."""
    day_text = pc.coalesce(table.column("charge_date"), table.column("charge_period_start"))
    subscription = pc.coalesce(
        _per_value(table.column("sub_account_id"), canonical_subscription_id, pa.string()),
        _per_value(table.column("meta_subscription_id"), canonical_subscription_id, pa.string()),
    )
    derived = [
        _per_value(day_text, charge_day, pa.date32()),
        subscription,
        _per_value(table.column("tags_raw"), parse_tags, TAGS_TYPE),
    ]
    return pa.table([*table.columns, *derived], schema=STAGING_SCHEMA)


def parse_meta(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _part(meta: dict[str, str]) -> str | None:
    sha = meta.get("file_sha256")
    return sha[:16] if sha else None


def explode_row(row: dict) -> pa.Table:
    """One bronze row -> its source rows on STAGING_SCHEMA (or one failure row when undecodable)."""
    meta = parse_meta(row.get("meta"))
    source_format = row.get("format") or ""
    payload = row.get("payload") or b""
    error = None
    try:
        mapped = map_columns(read_payload(source_format, row.get("content_type") or "", payload), source_format)
    # A corrupt payload must not stop the run: it becomes one quarantined row holding the payload.
    except DECODE_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        mapped = pa.table([pa.nulls(1, pa.string()) for _ in STAGING_FIELDS], names=list(STAGING_FIELDS))
    n = mapped.num_rows
    if error:
        try:
            raw = payload.decode("utf-8")
        except UnicodeDecodeError:
            raw = "base64:" + base64.b64encode(payload).decode("ascii")
    lineage = {
        "row_index": pa.array([-1], pa.int64()) if error else pa.array(range(n), pa.int64()),
        "source_format": pa.array([source_format] * n, pa.string()),
        "source": pa.array([row.get("source")] * n, pa.string()),
        "metric": pa.array([meta.get("metric")] * n, pa.string()),
        "meta_subscription_id": pa.array([meta.get("subscription_id") or None] * n, pa.string()),
        "delivery_part": pa.array([_part(meta)] * n, pa.string()),
        "delivery_id": pa.array([meta.get("delivery_id") or None] * n, pa.string()),
        "delivery_mode": pa.array([meta.get("delivery_mode") or None] * n, pa.string()),
        "topic": pa.array([row.get("topic")] * n, pa.string()),
        "partition": pa.array([row.get("partition")] * n, pa.int32()),
        "offset": pa.array([row.get("offset")] * n, pa.int64()),
        "batch_id": pa.array([row.get("batch_id")] * n, pa.string()),
        "bronze_run_id": pa.array([row.get("run_id")] * n, pa.string()),
        "fetched_at": pa.array([row.get("fetched_at")] * n, pa.timestamp("us", tz="UTC")),
        "parse_error": pa.array([error] * n, pa.string()),
        "raw_payload": pa.array([raw if error else None] * n, pa.string()),
    }
    if error:
        log.warning(
            "undecodable %s payload at %s/%s/%s: %s",
            source_format,
            row.get("topic"),
            row.get("partition"),
            row.get("offset"),
            error,
        )
    return derive(pa.table(list(mapped.columns) + list(lineage.values()), schema=TEXT_SCHEMA))


def _lineage(rows: list[dict], counts: list[int]) -> list[pa.Array]:
    """Lineage columns for the source rows of several bronze rows (row i repeated counts[i] times)."""
    import numpy as np

    take = pa.array(np.repeat(np.arange(len(rows)), counts))
    row_index = pa.array(np.concatenate([np.arange(n, dtype=np.int64) for n in counts]), pa.int64())
    metas = [parse_meta(r.get("meta")) for r in rows]
    per_row = {
        "source_format": ([r.get("format") or "" for r in rows], pa.string()),
        "source": ([r.get("source") for r in rows], pa.string()),
        "metric": ([m.get("metric") for m in metas], pa.string()),
        "meta_subscription_id": ([m.get("subscription_id") or None for m in metas], pa.string()),
        "delivery_part": ([_part(m) for m in metas], pa.string()),
        "delivery_id": ([m.get("delivery_id") or None for m in metas], pa.string()),
        "delivery_mode": ([m.get("delivery_mode") or None for m in metas], pa.string()),
        "topic": ([r.get("topic") for r in rows], pa.string()),
        "partition": ([r.get("partition") for r in rows], pa.int32()),
        "offset": ([r.get("offset") for r in rows], pa.int64()),
        "batch_id": ([r.get("batch_id") for r in rows], pa.string()),
        "bronze_run_id": ([r.get("run_id") for r in rows], pa.string()),
        "fetched_at": ([r.get("fetched_at") for r in rows], pa.timestamp("us", tz="UTC")),
    }
    total = int(sum(counts))
    columns = [row_index, *[pa.array(values, kind).take(take) for values, kind in per_row.values()]]
    return [*columns, pa.nulls(total, pa.string()), pa.nulls(total, pa.string())]  # parse_error, raw_payload


def _explode_group(rows: list[dict], raws: list[pa.Table]) -> pa.Table:
    """Decoded payloads of one format and one column layout -> staging rows, with one mapping pass for
    all of them (the per-column string work costs the same for 10 rows as for 10,000)."""
    source_format = rows[0].get("format") or ""
    mapped = map_columns(pa.concat_tables(raws), source_format)
    lineage = _lineage(rows, [t.num_rows for t in raws])
    return derive(pa.table(list(mapped.columns) + lineage, schema=TEXT_SCHEMA))


# Rows one mapped group may hold. A bronze batch can carry hundreds of payloads (700k rows at 5M); mapped
# as one group, its staging text and the decoded payloads sat in memory at once on every core (8 GB at 5M).
# Past a few payloads' worth a bigger group saves nothing: the derive already runs once per distinct value.
GROUP_ROWS = 65_536


def explode_rows(rows: list[dict]) -> Iterator[pa.Table]:
    """Bronze rows -> staging tables. Consecutive payloads with the same format and decoded schema are
    mapped together; anything that fails (or a group whose mapping fails) goes through `explode_row`,
    which turns an undecodable payload into its failure row."""
    group: list[dict] = []
    raws: list[pa.Table] = []
    rows_in_group = 0

    def flush() -> Iterator[pa.Table]:
        nonlocal rows_in_group
        if not group:
            return
        try:
            yield _explode_group(group, raws)
        except DECODE_ERRORS:
            for row in group:
                yield explode_row(row)
        group.clear()
        raws.clear()
        rows_in_group = 0

    for row in rows:
        source_format = row.get("format") or ""
        try:
            if source_format not in FORMAT_MAPS:
                raise PayloadError(f"unknown payload format {source_format!r}")
            raw = read_payload(source_format, row.get("content_type") or "", row.get("payload") or b"")
        except DECODE_ERRORS:
            yield from flush()
            yield explode_row(row)  # records the error and keeps the payload
            continue
        if group and (
            (group[0].get("format") or "") != source_format
            or not raws[0].schema.equals(raw.schema)
            or rows_in_group + raw.num_rows > GROUP_ROWS
        ):
            yield from flush()
        rows_in_group += raw.num_rows
        group.append(row)
        raws.append(raw)
    yield from flush()


def explode_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: bronze record batches in, staging record batches out."""
    for batch in batches:
        for table in explode_rows(batch.to_pylist()):
            yield from table.to_batches(max_chunksize=65_536)


def explode_arrow(bronze: pa.Table) -> pa.Table:
    """The same explode without Spark (tests, small inputs)."""
    tables = list(explode_rows(bronze.select(BRONZE_INPUT_COLUMNS).to_pylist()))
    return pa.concat_tables(tables) if tables else STAGING_SCHEMA.empty_table()
