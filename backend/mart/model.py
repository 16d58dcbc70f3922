"""The mart's dimensions as data: table, surrogate key, natural key and where each column comes from in gold."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dimension:
    """One dimension table. `natural` and `attributes` map mart column -> gold cost_daily column."""

    name: str  # the name pages and the agent use (group-by / filter)
    table: str
    key: str
    natural: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, str], ...] = ()
    in_aggregate: bool = True  # whether agg_cost_daily/monthly keep this key

    @property
    def natural_columns(self) -> list[str]:
        return [mart for mart, _ in self.natural]

    @property
    def gold_natural_columns(self) -> list[str]:
        return [gold for _, gold in self.natural]


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension(
        "billing_account",
        "dim_billing_account",
        "billing_account_key",
        (("billing_account_id", "billing_account_id"),),
        (("billing_account_name", "billing_account_name"),),
    ),
    Dimension(
        "subscription",
        "dim_subscription",
        "subscription_key",
        (("subscription_id", "subscription_id"),),
        (("subscription_name", "subscription_name"),),
    ),
    Dimension(
        "resource_group",
        "dim_resource_group",
        "resource_group_key",
        (("subscription_id", "subscription_id"), ("resource_group", "resource_group")),
    ),
    Dimension(
        "resource",
        "dim_resource",
        "resource_key",
        (("resource_id", "resource_id"),),
        (("resource_name", "resource_name"), ("resource_type", "resource_type"), ("region", "region")),
        in_aggregate=False,
    ),
    Dimension("region", "dim_region", "region_key", (("region", "region"),)),
    Dimension(
        "service",
        "dim_service",
        "service_key",
        (("service_name", "service_name"), ("service_category", "service_category")),
    ),
    Dimension(
        "meter",
        "dim_meter",
        "meter_key",
        (("meter_category", "meter_category"), ("meter_name", "meter_name"), ("pricing_unit", "pricing_unit")),
        in_aggregate=False,
    ),
    Dimension("pricing_model", "dim_pricing_model", "pricing_model_key", (("pricing_model", "pricing_model"),)),
    Dimension(
        "charge_category", "dim_charge_category", "charge_category_key", (("charge_category", "charge_category"),)
    ),
    Dimension("currency", "dim_currency", "currency_key", (("currency_code", "billing_currency"),)),
    Dimension("source", "dim_source", "source_key", (("source", "source"),)),
    # FOCUS 1.x (migration 0012): the cloud, and who provides the service (a marketplace vendor, a SaaS).
    Dimension("provider", "dim_provider", "provider_key", (("provider_name", "provider_name"),)),
    Dimension(
        "service_provider",
        "dim_service_provider",
        "service_provider_key",
        (("service_provider_name", "service_provider_name"),),
    ),
)
BY_NAME = {d.name: d for d in DIMENSIONS}

# Fact measures (COPY names its columns; 0014 added amortized_cost_converted at the table's end, 0017 the
# savings measures: contracted cost and the effective cost commitments covered / left unused).
FACT_MEASURES = (
    "actual_cost",
    "amortized_cost",
    "list_cost",
    "quantity",
    "actual_cost_converted",
    "amortized_cost_converted",
    "contracted_cost",
    "commitment_used_cost",
    "commitment_unused_cost",
)
FACT_COLUMNS = ("charge_date", *(d.key for d in DIMENSIONS), *FACT_MEASURES, "row_count", "load_id")
AGG_KEYS = tuple(d.key for d in DIMENSIONS if d.in_aggregate)
