"""The curated catalog of mart tables and views the agent may read: what each column means, its unit and currency."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "mart"

_COST_NOTE = "in the billing currency of the row (see `currency`); never sum across currencies"
_NAMES = (
    ("billing_account_id", "text", "billing account (EA enrollment / MCA billing profile) id"),
    ("billing_account", "text", "billing account display name"),
    (
        "subscription_id",
        "text",
        "subscription id: '/subscriptions/<lower-case guid>' for Azure; given a bare guid, compare with "
        "'/subscriptions/' || lower('<guid>') or use subscription_id LIKE '%<lower-case guid>%'",
    ),
    ("subscription", "text", "subscription display name"),
    ("resource_group", "text", "resource group name; '(none)' for charges without one"),
    ("service_name", "text", "FOCUS ServiceName, e.g. 'Virtual Machines', 'Storage'"),
    ("service_category", "text", "FOCUS ServiceCategory, e.g. 'Compute', 'Storage', 'Databases', 'Networking'"),
    ("region", "text", "Azure region, e.g. 'westeurope'"),
    ("pricing_model", "text", "'OnDemand', 'Reservation', 'SavingsPlan' or 'Spot'"),
    ("charge_category", "text", "FOCUS ChargeCategory: 'Usage', 'Purchase', 'Tax', 'Credit', 'Adjustment'"),
    ("currency", "text", "ISO 4217 billing currency code"),
    ("source", "text", "where the row came from: 'azure', 'focus-file', 'demo', ..."),
    ("provider", "text", "the cloud (FOCUS ProviderName / HostProviderName): 'Microsoft', 'AWS', 'Google Cloud', ..."),
    ("service_provider", "text", "who provides the service (FOCUS ServiceProviderName), e.g. a marketplace vendor"),
)
_MEASURES = (
    ("actual_cost", "numeric", f"billed cost (FOCUS BilledCost; purchases on the day bought) {_COST_NOTE}"),
    ("amortized_cost", "numeric", f"effective cost (FOCUS EffectiveCost; commitments spread over use) {_COST_NOTE}"),
    ("list_cost", "numeric", f"cost at list price before discounts {_COST_NOTE}"),
    ("quantity", "numeric", "usage quantity in the meter's pricing unit (only meaningful per meter)"),
    (
        "contracted_cost",
        "numeric",
        f"FOCUS ContractedCost: cost at the negotiated price, before commitments; NULL = not available (Azure "
        f"exports lack it) {_COST_NOTE}. negotiated savings = list_cost - contracted_cost; commitment savings = "
        "contracted_cost - amortized_cost (sum only rows where all of them are not NULL)",
    ),
    (
        "commitment_used_cost",
        "numeric",
        f"effective cost a reservation or savings plan covered (CommitmentDiscountStatus 'Used'); NULL = the source "
        f"has no commitment status {_COST_NOTE}",
    ),
    (
        "commitment_unused_cost",
        "numeric",
        f"effective cost of commitment left unused ('Unused'); utilisation = used / (used + unused) {_COST_NOTE}",
    ),
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class TableDoc:
    """One allow-listed relation: its purpose, grain and columns."""

    name: str  # unqualified; lives in schema `mart`
    purpose: str
    grain: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    def describe(self) -> str:
        lines = [f"{self.qualified}: {self.purpose}", f"grain: {self.grain}", "columns:"]
        lines += [f"  - {c.name} ({c.type}): {c.meaning}" for c in self.columns]
        return "\n".join(lines)


def _cols(*spec: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


CATALOG: tuple[TableDoc, ...] = (
    TableDoc(
        "v_cost_daily_summary",
        "daily cost per subscription, resource group, service, region, pricing model, charge category and "
        "currency (no resource or meter detail). The first choice for totals, trends and group-bys.",
        "one row per day x the listed dimensions",
        _cols(("charge_date", "date", "the usage day (UTC)"), *_NAMES, *_MEASURES),
    ),
    TableDoc(
        "v_cost_monthly",
        "monthly cost per the same dimensions as v_cost_daily_summary; the cheapest way to answer month questions.",
        "one row per calendar month x dimensions",
        _cols(("charge_month", "date", "first day of the month"), *_NAMES, *_MEASURES),
    ),
    TableDoc(
        "v_cost_daily",
        "daily cost per resource and meter: use it only to drill down to resources or meters (it is large).",
        "one row per day x resource x meter x the other dimensions",
        _cols(
            ("charge_date", "date", "the usage day (UTC)"),
            *_NAMES,
            ("resource_id", "text", "full Azure resource id (lower case); '' when the charge has no resource"),
            ("resource_name", "text", "resource name (last segment of the id)"),
            ("resource_type", "text", "e.g. 'microsoft.compute/virtualmachines'"),
            ("meter_category", "text", "Azure meter category"),
            ("meter_name", "text", "Azure meter name"),
            ("pricing_unit", "text", "unit of quantity, e.g. '1 Hour', '1 GB/Month'"),
            *_MEASURES,
        ),
    ),
    TableDoc(
        "agg_cost_by_tag",
        "daily cost per subscription and tag key/value. A resource without a value for a key is counted under "
        "tag_value 'untagged', so untagged share = untagged cost / all cost for that tag_key. Join "
        "mart.dim_subscription (subscription_key) and mart.dim_currency (currency_key) for names.",
        "one row per day x subscription_key x tag_key x tag_value x currency_key",
        _cols(
            ("charge_date", "date", "the usage day"),
            ("subscription_key", "integer", "-> mart.dim_subscription.subscription_key"),
            ("tag_key", "text", "normalised tag key, e.g. 'env', 'owner', 'cost_center'"),
            ("tag_value", "text", "tag value; 'untagged' when the resource lacks the key"),
            ("currency_key", "integer", "-> mart.dim_currency.currency_key"),
            ("actual_cost", "numeric", f"billed cost {_COST_NOTE}"),
            ("amortized_cost", "numeric", f"effective cost {_COST_NOTE}"),
        ),
    ),
    TableDoc(
        "resource_cost_changes",
        "resources whose daily cost started after a gap or stopped before one (waste hints); natural ids, so "
        "join mart.dim_resource on resource_id for names",
        "one row per resource x event x event_date",
        _cols(
            ("charge_month", "date", "first day of the event's month"),
            ("event_date", "date", "first day with cost (started) / last day with cost (stopped)"),
            ("event", "text", "'started' or 'stopped'"),
            ("resource_id", "text", "full Azure resource id (lower case)"),
            ("subscription_id", "text", "'/subscriptions/<lower-case guid>'"),
            ("resource_group", "text", "resource group name"),
            ("service_name", "text", "FOCUS ServiceName"),
            ("currency_code", "text", "ISO 4217 billing currency code"),
            ("daily_cost", "numeric", f"cost on event_date (amortized where known, else actual) {_COST_NOTE}"),
        ),
    ),
    TableDoc(
        "dim_subscription",
        "subscriptions",
        "one row per subscription",
        _cols(
            ("subscription_key", "integer", "surrogate key"),
            ("subscription_id", "text", "'/subscriptions/<lower-case guid>' for Azure (not a bare guid)"),
            ("subscription_name", "text", "name"),
            ("label", "text", "display name"),
        ),
    ),
    TableDoc(
        "dim_currency",
        "billing currencies",
        "one row per currency",
        _cols(("currency_key", "integer", "surrogate key"), ("currency_code", "text", "ISO 4217 code")),
    ),
    TableDoc(
        "dim_resource",
        "resources with their attributes",
        "one row per resource id",
        _cols(
            ("resource_key", "integer", "surrogate key"),
            ("resource_id", "text", "full Azure resource id"),
            ("resource_name", "text", "name"),
            ("resource_type", "text", "type"),
            ("region", "text", "region"),
            ("label", "text", "display name"),
        ),
    ),
    TableDoc(
        "dim_tag",
        "distinct tag key/value pairs",
        "one row per (tag_key, tag_value)",
        _cols(("tag_id", "integer", "surrogate key"), ("tag_key", "text", "key"), ("tag_value", "text", "value")),
    ),
    TableDoc(
        "bridge_resource_tag",
        "which resource carries which tag (join dim_resource and dim_tag)",
        "one row per resource x tag",
        _cols(
            ("resource_key", "integer", "-> dim_resource"),
            ("tag_id", "integer", "-> dim_tag"),
            ("first_seen", "date", "first day seen"),
            ("last_seen", "date", "last day seen"),
        ),
    ),
    TableDoc(
        "anomalies",
        "detected cost anomalies with the expected band and the top contributors",
        "one row per level x dimension_value x metric x charge_date",
        _cols(
            ("anomaly_id", "bigint", "id"),
            ("level", "text", "'total', 'subscription', 'resource_group', 'service' or 'tag:<key>'"),
            ("dimension_value", "text", "the member (e.g. the service name); '' = (none)"),
            ("metric", "text", "'actual' or 'amortized'"),
            ("charge_date", "date", "the anomalous day"),
            ("expected", "numeric", "expected cost that day (currency column)"),
            ("lower_bound", "numeric", "lower end of the expected band"),
            ("upper_bound", "numeric", "upper end of the expected band"),
            ("actual", "numeric", "observed cost that day"),
            ("impact", "numeric", "actual - expected: the unexpected cost"),
            ("currency", "text", "currency code"),
            ("severity", "numeric", "robust z-score; higher is worse"),
            ("kind", "text", "'spike', 'drop', 'level_shift' or 'new_cost'"),
            ("method", "text", "detector"),
            ("contributors", "jsonb", 'array of {"dimension","value","expected","actual","delta"}'),
            ("status", "text", "'open', 'expected' or 'resolved'"),
        ),
    ),
    TableDoc(
        "forecasts",
        "cost forecasts per scope and day; several generations are kept: use the latest generated_at",
        "one row per scope_type x scope_value x metric x forecast_date x generated_at",
        _cols(
            ("scope_type", "text", "'total', 'subscription', 'resource_group', 'service' or 'tag:<key>'"),
            ("scope_value", "text", "the member; '' for total"),
            ("metric", "text", "'actual' or 'amortized'"),
            ("forecast_date", "date", "the forecast day"),
            ("point", "numeric", "forecast cost for that day (currency column)"),
            ("lower_bound", "numeric", "lower end of the prediction interval"),
            ("upper_bound", "numeric", "upper end of the prediction interval"),
            ("interval_level", "numeric", "e.g. 0.95"),
            ("currency", "text", "currency code"),
            ("method", "text", "forecast method"),
            ("backtest_metric", "text", "e.g. 'MAPE'"),
            ("backtest_error", "numeric", "backtest error of the method"),
            ("generated_at", "timestamptz", "when the forecast was made"),
        ),
    ),
    TableDoc(
        "v_budgets",
        "budgets: scope, amount per period and alert thresholds",
        "one row per budget",
        _cols(
            ("budget_id", "bigint", "id"),
            ("name", "text", "budget name"),
            ("scope_type", "text", "'total', 'subscription', 'resource_group', 'service' or 'tag'"),
            (
                "scope_value",
                "text",
                "the member: service name, tag value, ...; for subscription budgets the subscription_id "
                "('/subscriptions/<guid>') as the Budgets page saves it",
            ),
            ("tag_key", "text", "for tag budgets"),
            ("metric", "text", "'actual' or 'amortized'"),
            ("amount", "numeric", "budget per period (currency column)"),
            ("currency", "text", "currency code"),
            ("period", "text", "'monthly', 'quarterly' or 'yearly'"),
            ("actual_thresholds", "numeric[]", "percent of amount that alert on actual spend"),
            ("forecast_thresholds", "numeric[]", "percent of amount that alert on forecast spend"),
            ("enabled", "boolean", "whether the budget is evaluated"),
        ),
    ),
    TableDoc(
        "budget_alerts",
        "alerts fired when spend or forecast crossed a budget threshold",
        "one row per budget x period x threshold",
        _cols(
            ("alert_id", "bigint", "id"),
            ("budget_id", "bigint", "-> v_budgets.budget_id"),
            ("budget_name", "text", "budget name"),
            ("period_start", "date", "first day of the budget period"),
            ("threshold_type", "text", "'actual' or 'forecast'"),
            ("threshold_pct", "numeric", "the threshold crossed, percent of the budget"),
            ("amount_at_alert", "numeric", "spend (or forecast) when it fired"),
            ("budget_amount", "numeric", "the budget amount"),
            ("currency", "text", "currency code"),
            ("triggered_at", "timestamptz", "when it fired"),
        ),
    ),
)

BY_NAME: dict[str, TableDoc] = {t.name: t for t in CATALOG}
# What the SQL guard accepts in FROM/JOIN: exactly the catalog (no ops, audit, load history or budgets base table).
ALLOWED_TABLES: frozenset[str] = frozenset(t.qualified for t in CATALOG)


def list_tables() -> str:
    """One line per table/view: name and purpose."""
    return "\n".join(f"{t.qualified}: {t.purpose}" for t in CATALOG)


def describe(name: str) -> str:
    """The table's documentation, or a list of valid names."""
    key = name.strip().lower().removeprefix(f"{SCHEMA}.")
    doc = BY_NAME.get(key)
    if doc is None:
        return f"unknown table {name!r}; valid tables: {', '.join(sorted(ALLOWED_TABLES))}"
    return doc.describe()
