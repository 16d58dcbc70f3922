"""File import: FOCUS CSV/Parquet and Azure EA/MCA exports with their quirks, exact totals, refusal, the inbox."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from backend.demo.estate import generate_estate
from backend.sources.base import ContentType, PayloadFormat
from backend.sources.csvsplit import record_ends
from backend.sources.cursors import MemoryCursorStore
from backend.sources.files import FileRefusedError, FileSource, prepare_file, scan_inbox
from tests.conftest import make_settings

# FOCUS 1.0-1.2 mandatory columns (DESIGN.md reference) plus a few optional / Azure x_ columns.
FOCUS_COLUMNS = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName", "SubAccountId",
    "SubAccountName", "ResourceId", "Tags", "x_ResourceGroupName",
]  # fmt: skip
# EA cost details, schema 2024-08-01 (Microsoft's dataset schema reference), in file order.
EA_COLUMNS = [
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
# The older EA export layout named in DESIGN.md (Cost, BillingCurrency).
EA_LEGACY_COLUMNS = [
    "BillingAccountId", "BillingAccountName", "AccountName", "SubscriptionId", "SubscriptionName", "Date",
    "MeterCategory", "MeterSubCategory", "MeterName", "Quantity", "EffectivePrice", "Cost", "UnitPrice",
    "BillingCurrency", "ResourceLocation", "ResourceId", "ResourceGroup", "Tags", "ChargeType", "PricingModel",
    "ReservationId",
]  # fmt: skip
# MCA cost details (camelCase), in file order.
MCA_COLUMNS = [
    "invoiceId", "previousInvoiceId", "billingAccountId", "billingAccountName", "billingProfileId",
    "billingProfileName", "invoiceSectionId", "invoiceSectionName", "partnerName", "resellerName", "resellerMpnId",
    "costCenter", "billingPeriodEndDate", "billingPeriodStartDate", "servicePeriodEndDate", "servicePeriodStartDate",
    "date", "serviceFamily", "productOrderId", "productOrderName", "consumedService", "meterId", "meterName",
    "meterCategory", "meterSubCategory", "meterRegion", "ProductId", "ProductName", "SubscriptionId",
    "subscriptionName", "publisherType", "publisherId", "publisherName", "resourceGroupName", "ResourceId",
    "resourceLocation", "location", "effectivePrice", "quantity", "unitOfMeasure", "chargeType", "billingCurrency",
    "pricingCurrency", "costInBillingCurrency", "costInPricingCurrency", "costInUsd", "paygCostInBillingCurrency",
    "paygCostInUsd", "exchangeRatePricingToBilling", "exchangeRateDate", "isAzureCreditEligible", "serviceInfo1",
    "serviceInfo2", "additionalInfo", "tags", "PayGPrice", "frequency", "term", "reservationId", "reservationName",
    "pricingModel", "unitPrice", "costAllocationRuleName", "benefitId", "benefitName", "provider",
]  # fmt: skip

SUB_A = "11111111-1111-1111-1111-111111111111"
SUB_B = "22222222-2222-2222-2222-222222222222"


def _csv(columns: list[str], rows: list[dict[str, str]], *, bom: bool = False, crlf: bool = False) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    data = out.getvalue().encode("utf-8")
    return (b"\xef\xbb\xbf" + data) if bom else data


def _body_records(data: bytes) -> list[bytes]:
    data = data.removeprefix(b"\xef\xbb\xbf")
    ends = record_ends(data)
    return [data[s:e] for s, e in zip(ends[:-1], ends[1:], strict=True)]


def _check_chunks_are_exact(prepared, data: bytes) -> None:
    header = _body_records(b"x\n" + data.removeprefix(b"\xef\xbb\xbf"))[0]
    delivered: list[bytes] = []
    for chunk in prepared.chunks:
        assert chunk.payload.startswith(header), "every chunk starts with the header line (BOM removed)"
        delivered += _body_records(chunk.payload)
    assert sorted(delivered) == sorted(r for r in _body_records(data) if r.strip())


def _focus_rows() -> list[dict[str, str]]:
    base = {
        "BillingAccountId": "8611537",
        "BillingAccountName": "Contoso",
        "BillingCurrency": "EUR",
        "BillingPeriodStart": "2025-03-01T00:00:00Z",
        "BillingPeriodEnd": "2025-04-01T00:00:00Z",
        "ChargeCategory": "Usage",
        "ChargeClass": "NULL",
        "InvoiceIssuerName": "Microsoft",
        "ProviderName": "Microsoft",
        "PublisherName": "Microsoft",
        "ServiceCategory": "Compute",
        "ServiceName": "Virtual Machines",
        "PricingUnit": "1 Hour",
        "x_ResourceGroupName": "rg-web",
    }
    rows = []
    amounts = ["0.123456789012", "12.5", "1E-05", "3.000000000001", "0", "7.77"]
    for i, amount in enumerate(amounts):
        day = date(2025, 3, 1 + i % 3)
        rows.append(
            base
            | {
                "ChargePeriodStart": f"{day.isoformat()}T00:00:00Z",
                "ChargePeriodEnd": f"{day.isoformat()}T00:00:00Z",
                "SubAccountId": f"/subscriptions/{SUB_A if i % 2 else SUB_B}",
                "SubAccountName": "NULL",
                "BilledCost": amount,
                "EffectiveCost": amount,
                "ListCost": amount,
                "ContractedCost": amount,
                "PricingQuantity": "24",
                "ResourceId": f"/subscriptions/{SUB_A}/resourcegroups/rg-web/providers/x/vm-{i}",
                # Quoted field with a comma and a newline; tag keys with stray spaces and odd case.
                "ChargeDescription": f"D4s v5, line {i}\nsecond line" if i == 1 else "D4s v5",
                "Tags": '{" env ":"prod","Team":"web, mobile"}' if i % 3 == 0 else "NULL",
            }
        )
    return rows


def test_focus_csv_with_null_strings_json_tags_and_quoted_newlines(tmp_path):
    rows = _focus_rows()
    data = _csv(FOCUS_COLUMNS, rows)
    path = tmp_path / "focus-1.0-march.csv"
    path.write_bytes(data)
    prepared = prepare_file(path, make_settings(tmp_path))
    assert prepared.detection.format.payload_format == PayloadFormat.focus
    assert "BilledCost" in prepared.detection.describe()
    assert prepared.metric == "FocusCost"
    assert prepared.row_count == 6
    assert prepared.total_cost == sum(Decimal(r["BilledCost"]) for r in rows)
    assert prepared.total_cost == Decimal("23.393466789013")
    group = prepared.totals[(f"/subscriptions/{SUB_B}", date(2025, 3, 1), "EUR")]
    assert group.rows == 1 and group.cost == Decimal("0.123456789012") and group.currency == "EUR"
    _check_chunks_are_exact(prepared, data)
    chunk = next(c for c in prepared.chunks if c.key == f"/subscriptions/{SUB_A}|2025-03-02")
    assert chunk.content_type == ContentType.csv and chunk.meta["row_count"] == "1"
    assert b"D4s v5, line 1\nsecond line" in chunk.payload


def test_focus_parquet(tmp_path):
    estate = generate_estate(seed=1, months=1, target_rows=3_000, subscriptions=2, anomalies=0)
    table = estate.plain_costs()
    path = tmp_path / "focus.parquet"
    pq.write_table(table, path)
    prepared = prepare_file(path, make_settings(tmp_path))
    assert prepared.row_count == table.num_rows
    assert prepared.total_cost == sum(table["BilledCost"].to_pylist())
    assert all(c.content_type == ContentType.parquet for c in prepared.chunks)
    assert sum(pq.read_table(io.BytesIO(c.payload)).num_rows for c in prepared.chunks) == table.num_rows
    sub = estate.subscriptions[0]
    assert any(c.key == f"{sub.sub_account_id}|{estate.start.isoformat()}" for c in prepared.chunks)


def _ea_rows(cost_column: str) -> list[dict[str, str]]:
    rows = []
    amounts = ["10.1234567890", "0.000000000123", "5", "-1.25", "2.5E-3"]
    for i, amount in enumerate(amounts):
        rows.append(
            {
                "AccountName": "Platform",
                "AccountOwnerId": "ops@contoso.com",
                "SubscriptionId": SUB_A if i < 3 else SUB_B,
                "SubscriptionName": "prod",
                "ResourceGroup": "rg-web",
                "ResourceLocation": "westeurope",
                "Date": f"03/0{1 + i % 2}/2025",
                "MeterCategory": "Virtual Machines",
                "MeterSubCategory": "Dsv5 Series",
                "MeterName": "D4s v5",
                "Quantity": "24",
                "EffectivePrice": "0.192",
                cost_column: amount,
                "UnitPrice": "0.192",
                "ResourceId": f"/subscriptions/{SUB_A}/resourceGroups/rg-web/providers/x/vm-{i}",
                # Legacy EA tags: JSON members without the surrounding braces.
                "Tags": '"env": "prod","team": "web"' if i % 2 == 0 else "",
                "ChargeType": "Usage" if i != 4 else "UnusedReservation",
                "PricingModel": "OnDemand" if i != 4 else "Reservation",
                "BillingAccountId": "8611537",
                "BillingCurrencyCode": "USD",
                "BillingCurrency": "USD",
            }
        )
    return rows


@pytest.mark.parametrize("compress", [False, True])
def test_ea_export_with_bom_us_dates_legacy_tags_and_gzip(tmp_path, compress):
    rows = _ea_rows("CostInBillingCurrency")
    data = _csv(EA_COLUMNS, rows, bom=True, crlf=True)
    path = tmp_path / ("ea-export.csv.gz" if compress else "ea-export.csv")
    path.write_bytes(gzip.compress(data) if compress else data)
    prepared = prepare_file(path, make_settings(tmp_path))
    assert prepared.detection.format.payload_format == PayloadFormat.azure_export_ea
    assert prepared.cost_column == "CostInBillingCurrency"
    assert prepared.total_cost == sum(Decimal(r["CostInBillingCurrency"]) for r in rows)
    assert prepared.metric == "AmortizedCost", "an UnusedReservation row only exists in amortized data"
    assert prepared.totals[(SUB_A, date(2025, 3, 1), "USD")].cost == Decimal("10.1234567890") + Decimal("5")
    assert not prepared.chunks[0].payload.startswith(b"\xef\xbb\xbf")
    _check_chunks_are_exact(prepared, data)
    assert all(c.payload.endswith(b"\r\n") for c in prepared.chunks)


def test_legacy_ea_layout_actual_by_file_name(tmp_path):
    rows = _ea_rows("Cost")
    for row in rows:
        row["Date"] = "2025-03-01"  # ISO dates in the same layout
        row["ChargeType"] = "Usage"
    path = tmp_path / "enrollment-actual-cost.csv"
    data = _csv(EA_LEGACY_COLUMNS, rows, bom=True)
    path.write_bytes(data)
    prepared = prepare_file(path, make_settings(tmp_path))
    assert prepared.detection.format.payload_format == PayloadFormat.azure_export_ea
    assert prepared.metric == "ActualCost" and prepared.cost_column == "Cost"
    assert prepared.total_cost == Decimal("13.875956789123")
    assert {c.key for c in prepared.chunks} == {f"{SUB_A}|2025-03-01", f"{SUB_B}|2025-03-01"}


def test_mca_export(tmp_path):
    rows = [
        {
            "invoiceId": "",
            "billingAccountId": "abc:def_2019-05-31",
            "billingProfileId": "BP-1",
            "date": f"2025-03-0{d}",
            "meterCategory": "Storage",
            "quantity": "1.5",
            "chargeType": "Usage",
            "SubscriptionId": SUB_B,
            "resourceGroupName": "rg-data",
            "billingCurrency": "EUR",
            "costInBillingCurrency": amount,
            "paygCostInBillingCurrency": amount,
            "tags": '{"CostCenter":"CC-1"," env":"dev"}',
        }
        for d, amount in ((1, "0.5"), (1, "0.25"), (2, "100.000000000001"))
    ]
    path = tmp_path / "mca.csv"
    data = _csv(MCA_COLUMNS, rows)
    path.write_bytes(data)
    prepared = prepare_file(path, make_settings(tmp_path))
    assert prepared.detection.format.payload_format == PayloadFormat.azure_export_mca
    assert "invoiceId" in prepared.detection.matched
    assert prepared.total_cost == Decimal("100.750000000001")
    assert prepared.totals[(SUB_B, date(2025, 3, 1), "EUR")].rows == 2
    _check_chunks_are_exact(prepared, data)


def test_big_days_are_cut_into_chunks_that_fit_one_message(tmp_path):
    rows = _focus_rows() * 200
    data = _csv(FOCUS_COLUMNS, rows)
    path = tmp_path / "focus.csv"
    path.write_bytes(data)
    settings = make_settings(tmp_path, kafka_max_message_bytes=12_000)
    prepared = prepare_file(path, settings)
    assert max(len(c.payload) for c in prepared.chunks) <= 12_000
    assert len({c.key for c in prepared.chunks}) < len(prepared.chunks)
    _check_chunks_are_exact(prepared, data)


def test_unrecognised_and_oversized_files_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "invoice.csv"
    path.write_bytes(b"Invoice,Amount\nINV-1,10\n")
    with pytest.raises(FileRefusedError) as refused:
        prepare_file(path, make_settings(tmp_path))
    message = str(refused.value)
    assert "FOCUS" in message and "EA" in message and "MCA" in message and "BilledCost" in message
    big = tmp_path / "big.csv"
    big.write_bytes(_csv(FOCUS_COLUMNS, _focus_rows()) + b"x" * (1024 * 1024 + 10))
    with pytest.raises(FileRefusedError, match="MAX_UPLOAD_MB"):
        prepare_file(big, make_settings(tmp_path, max_upload_mb=1))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(_csv(FOCUS_COLUMNS, []))
    # A header without rows (Azure's export of a period without cost) is no error: there is nothing to load.
    nothing = prepare_file(empty, make_settings(tmp_path))
    assert nothing.row_count == 0 and nothing.chunks == [] and "nothing to load" in nothing.notes[0]


def test_bad_amounts_are_kept_for_quarantine_and_left_out_of_totals(tmp_path):
    rows = _focus_rows()
    rows[2]["BilledCost"] = "twelve"
    path = tmp_path / "focus.csv"
    data = _csv(FOCUS_COLUMNS, rows)
    path.write_bytes(data)
    prepared = prepare_file(path, make_settings(tmp_path))
    assert prepared.invalid_amounts == 1 and prepared.row_count == 6
    assert prepared.total_cost == sum(Decimal(r["BilledCost"]) for i, r in enumerate(rows) if i != 2)
    _check_chunks_are_exact(prepared, data)


class ListSink:
    def __init__(self) -> None:
        self.chunks = []
        self.flushed = 0

    def send(self, chunk) -> None:
        self.chunks.append(chunk)

    def flush(self) -> None:
        self.flushed += 1


def deliver_via_sink(sink: ListSink):
    """A `deliver` for scan_inbox that sends a batch to `sink`, flushes and commits at once: the sink is the
    destination here (the pipeline's own commits only once bronze holds the batch)."""

    def deliver(source: FileSource, batch_id: str) -> None:
        for chunk in source.fetch(batch_id):
            sink.send(chunk)
        sink.flush()
        source.commit(batch_id)

    return deliver


def test_inbox_imports_good_files_and_rejects_bad_ones_without_touching_loaded_data(tmp_path):
    settings = make_settings(tmp_path)
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True)
    (inbox / "a-focus.csv").write_bytes(_csv(FOCUS_COLUMNS, _focus_rows()))
    (inbox / "b-notes.csv").write_bytes(b"hello,world\n1,2\n")
    (inbox / "c-ea.csv.gz").write_bytes(gzip.compress(_csv(EA_COLUMNS, _ea_rows("CostInBillingCurrency"), bom=True)))
    (inbox / ".hidden.csv").write_bytes(b"ignored")
    sink, cursors = ListSink(), MemoryCursorStore()
    results = scan_inbox(settings, deliver=deliver_via_sink(sink), cursors=cursors)
    status = {r.file_name: r.status for r in results}
    assert status == {"a-focus.csv": "imported", "b-notes.csv": "refused", "c-ea.csv.gz": "imported"}
    assert (inbox / "processed" / "a-focus.csv").exists() and (inbox / "processed" / "c-ea.csv.gz").exists()
    assert (inbox / "rejected" / "b-notes.csv").exists()
    assert "Expected formats" in (inbox / "rejected" / "b-notes.csv.error.txt").read_text()
    assert not any(c.meta["file_name"] == "b-notes.csv" for c in sink.chunks)
    rows = cursors.rows("file")
    assert sum(r.reported_total for r in rows if r.metric == "FocusCost") == Decimal("23.393466789013")
    assert {r.metric for r in rows} == {"FocusCost", "AmortizedCost"}


def test_file_source_refuses_before_yielding_anything(tmp_path):
    good = tmp_path / "good.csv"
    good.write_bytes(_csv(FOCUS_COLUMNS, _focus_rows()))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n1,2\n")
    source = FileSource(make_settings(tmp_path), [good, bad], cursors=MemoryCursorStore())
    chunks = []
    with pytest.raises(FileRefusedError):
        chunks.extend(source.fetch("b1"))
    assert chunks == []


def test_record_ends_handles_quotes_across_blocks(monkeypatch):
    from backend.sources import csvsplit

    monkeypatch.setattr(csvsplit, "_BLOCK", 7)
    data = b'a,b\n"x\ny",1\n"q""\n",2\nlast,3'
    ends = record_ends(data)
    assert [data[s:e] for s, e in zip([0, *ends[:-1]], ends, strict=True)] == [
        b"a,b\n",
        b'"x\ny",1\n',
        b'"q""\n",2\n',
        b"last,3",
    ]


def test_paths_outside_are_refused(tmp_path: Path):
    with pytest.raises(FileRefusedError, match="not a file"):
        prepare_file(tmp_path / "missing.csv", make_settings(tmp_path))
