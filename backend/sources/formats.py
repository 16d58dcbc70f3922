"""Cost file formats Costlake imports (FOCUS 1.0-1.3, Azure EA and MCA cost exports) and header-based detection."""

from __future__ import annotations

from dataclasses import dataclass

from backend.sources.base import PayloadFormat


@dataclass(frozen=True)
class FileFormat:
    """A recognised file layout: the columns that identify it and the columns the importer reads."""

    name: str
    payload_format: PayloadFormat
    required: tuple[str, ...]  # all must be present (case-insensitive) for the format to match
    markers: tuple[str, ...]  # at least one must be present: tells look-alike formats apart
    date_columns: tuple[str, ...]  # the charge day, first present wins
    scope_columns: tuple[str, ...]  # subscription / account of a row, first present and non-empty wins
    cost_columns: tuple[str, ...]  # the billed amount the file reports, first present wins
    extra_cost_columns: tuple[str, ...] = ()  # further amounts totalled for reconciliation
    currency_columns: tuple[str, ...] = ()
    default_metric: str = "ActualCost"


# FOCUS 1.0-1.3 (mandatory columns common to all four versions; Azure's FocusCost export adds x_ columns).
FOCUS = FileFormat(
    name="FOCUS 1.0-1.3",
    payload_format=PayloadFormat.focus,
    required=("BilledCost", "EffectiveCost", "ChargePeriodStart", "BillingCurrency", "BillingAccountId"),
    markers=("ChargeCategory", "ServiceName", "ListCost", "ContractedCost"),
    date_columns=("ChargePeriodStart",),
    scope_columns=("SubAccountId", "BillingAccountId"),
    cost_columns=("BilledCost",),
    extra_cost_columns=("EffectiveCost",),
    currency_columns=("BillingCurrency",),
    default_metric="FocusCost",
)

# Microsoft Customer Agreement cost details / exports (camelCase headers, invoice and service-period columns).
AZURE_MCA = FileFormat(
    name="Azure cost export (MCA)",
    payload_format=PayloadFormat.azure_export_mca,
    required=("date", "meterCategory", "quantity", "chargeType", "costInBillingCurrency", "billingProfileId"),
    markers=("invoiceId", "servicePeriodStartDate", "exchangeRatePricingToBilling", "paygCostInBillingCurrency"),
    date_columns=("date",),
    scope_columns=("SubscriptionId", "subscriptionGuid", "billingProfileId"),
    cost_columns=("costInBillingCurrency",),
    extra_cost_columns=("paygCostInBillingCurrency",),
    currency_columns=("billingCurrency", "billingCurrencyCode"),
)

# Enterprise Agreement cost details / exports (PascalCase; older files say Cost, newer CostInBillingCurrency).
AZURE_EA = FileFormat(
    name="Azure cost export (EA)",
    payload_format=PayloadFormat.azure_export_ea,
    required=("Date", "MeterCategory", "Quantity", "ResourceId", "ChargeType"),
    markers=("AccountOwnerId", "AccountName", "ResourceGroup", "EnrollmentNumber"),
    date_columns=("Date",),
    scope_columns=("SubscriptionId", "SubscriptionGuid", "BillingAccountId"),
    cost_columns=("CostInBillingCurrency", "Cost", "PreTaxCost"),
    extra_cost_columns=("PayGPrice",),
    currency_columns=("BillingCurrencyCode", "BillingCurrency"),
)

# Checked in this order: MCA's markers are the most specific, EA files also carry some MCA-era columns.
FORMATS: tuple[FileFormat, ...] = (FOCUS, AZURE_MCA, AZURE_EA)


class UnrecognisedFileError(ValueError):
    """The header matches none of the formats Costlake imports."""


@dataclass(frozen=True)
class Detection:
    format: FileFormat
    matched: tuple[str, ...]  # the identifying columns found, as spelled in the file
    columns: dict[str, str]  # lower-case name -> name as spelled in the file

    def column(self, candidates: tuple[str, ...]) -> str | None:
        for name in candidates:
            if name.lower() in self.columns:
                return self.columns[name.lower()]
        return None

    def describe(self) -> str:
        return f"{self.format.name} (matched columns: {', '.join(self.matched)})"


# Columns that first appear in a FOCUS version (checked newest first): how a file says which one it is.
_FOCUS_VERSION_MARKERS = (
    ("1.3", ("ServiceProviderName", "HostProviderName", "AllocatedMethodId", "ContractApplied")),
    ("1.2", ("InvoiceId", "PricingCurrency", "BillingAccountType", "SubAccountType", "PricingCurrencyEffectiveCost")),
    ("1.1", ("CommitmentDiscountQuantity", "CapacityReservationId", "SkuMeter", "ServiceSubcategory")),
)


def focus_version(columns) -> str:
    """The FOCUS version a header is at least (1.0 when it has none of the later versions' columns)."""
    present = {c.strip().lower() for c in columns}
    for version, markers in _FOCUS_VERSION_MARKERS:
        if any(m.lower() in present for m in markers):
            return version
    return "1.0"


def expected_formats() -> str:
    return "; ".join(f"{f.name}: {', '.join(f.required)} and one of {', '.join(f.markers)}" for f in FORMATS)


def detect(header: list[str], *, file_name: str = "") -> Detection:
    """The format whose identifying columns the header holds; refuses anything else with what was expected."""
    columns = {name.strip().lower(): name for name in header}
    for fmt in FORMATS:
        missing = [c for c in fmt.required if c.lower() not in columns]
        markers = [columns[m.lower()] for m in fmt.markers if m.lower() in columns]
        if missing or not markers:
            continue
        cost = [c for c in fmt.cost_columns if c.lower() in columns]
        if not cost:
            continue
        matched = tuple(columns[c.lower()] for c in fmt.required) + tuple(markers) + (columns[cost[0].lower()],)
        return Detection(fmt, matched, columns)
    shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
    raise UnrecognisedFileError(
        f"{file_name or 'the file'} is not a cost file Costlake can import: its header ({shown}) matches none of "
        f"the expected formats. Expected formats and their key columns: {expected_formats()}. "
        "Export FOCUS or Azure cost details (actual or amortized) as CSV (optionally gzip) or FOCUS as Parquet."
    )
