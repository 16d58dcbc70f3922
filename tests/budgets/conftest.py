"""A small migrated mart with subscriptions sharing a resource group name, two clouds, two currencies and tags."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade

FIRST, AS_OF = date(2025, 3, 1), date(2025, 6, 20)
AGG_KEYS = [
    "billing_account_key",
    "subscription_key",
    "resource_group_key",
    "region_key",
    "service_key",
    "pricing_model_key",
    "charge_category_key",
    "currency_key",
    "source_key",
    "provider_key",
]
# (subscription, resource group, service, region, provider, currency, resource) keys and the cost per day.
ROWS = [
    ((1, 1, 1, 1, 1, 1, 1), 10),  # s-a NetworkWatcherRG, Storage, westeurope, Microsoft, USD
    ((2, 2, 1, 2, 1, 1, 2), 20),  # s-b NetworkWatcherRG, Storage, eastus, Microsoft, USD
    ((1, 3, 2, 1, 1, 1, 3), 30),  # s-a app-rg, Compute, westeurope, Microsoft, USD
    ((2, 0, 2, 2, 2, 1, 4), 40),  # s-b, Compute, eastus, AWS, USD
    ((1, 3, 2, 1, 1, 2, 3), 1000),  # s-a app-rg, Compute, westeurope, Microsoft, EUR: never in a USD budget
]
DIMENSIONS = [
    "INSERT INTO mart.dim_currency (currency_key, currency_code) VALUES (1, 'USD'), (2, 'EUR')",
    "INSERT INTO mart.dim_subscription (subscription_key, subscription_id, subscription_name)"
    " VALUES (1, 's-a', 'Alpha'), (2, 's-b', 'Beta')",
    "INSERT INTO mart.dim_resource_group (resource_group_key, subscription_id, resource_group)"
    " VALUES (1, 's-a', 'NetworkWatcherRG'), (2, 's-b', 'NetworkWatcherRG'), (3, 's-a', 'app-rg')",
    "INSERT INTO mart.dim_service (service_key, service_name, service_category)"
    " VALUES (1, 'Storage', 'Storage'), (2, 'Compute', 'Compute')",
    "INSERT INTO mart.dim_region (region_key, region) VALUES (1, 'westeurope'), (2, 'eastus')",
    "INSERT INTO mart.dim_resource (resource_key, resource_id) VALUES (1, 'r1'), (2, 'r2'), (3, 'r3'), (4, 'r4')",
]


def insert_dimensions(conn: sa.Connection, *, providers: bool = True) -> None:
    for statement in DIMENSIONS:
        conn.execute(sa.text(statement))
    if providers:
        conn.execute(
            sa.text("INSERT INTO mart.dim_provider (provider_key, provider_name) VALUES (1, 'Microsoft'), (2, 'AWS')")
        )


def insert_costs(conn: sa.Connection) -> None:
    """ROWS every day FIRST..AS_OF in the daily aggregate; June's in the fact too, with r3 and r4 tagged env=prod
    (and their June cost in the by-tag aggregate)."""
    cols = ", ".join(AGG_KEYS)
    agg = sa.text(
        f"INSERT INTO mart.agg_cost_daily (charge_date, {cols}, actual_cost, amortized_cost, fact_rows)"
        f" VALUES (:d, 0, :sub, :rg, :region, :svc, 0, 0, :cur, 0, :prov, :cost, :cost, 1)"
    )
    conn.execute(
        sa.text(
            "CREATE TABLE mart.fact_cost_daily_test_2025_06 PARTITION OF mart.fact_cost_daily"
            " FOR VALUES FROM ('2025-06-01') TO ('2025-07-01')"
        )
    )
    fact = sa.text(
        "INSERT INTO mart.fact_cost_daily (charge_date, billing_account_key, subscription_key, resource_group_key,"
        " resource_key, region_key, service_key, meter_key, pricing_model_key, charge_category_key, currency_key,"
        " source_key, provider_key, actual_cost, amortized_cost, load_id)"
        " VALUES (:d, 0, :sub, :rg, :res, :region, :svc, 0, 0, 0, :cur, 0, :prov, :cost, :cost, 1)"
    )
    agg_rows, fact_rows = [], []
    for i in range((AS_OF - FIRST).days + 1):
        day = FIRST + timedelta(days=i)
        for (sub, rg, svc, region, prov, cur, res), cost in ROWS:
            row = {"d": day, "sub": sub, "rg": rg, "svc": svc, "region": region, "prov": prov, "cur": cur}
            agg_rows.append({**row, "cost": cost})
            if day.month == 6:
                fact_rows.append({**row, "res": res, "cost": cost})
    conn.execute(agg, agg_rows)
    conn.execute(fact, fact_rows)
    # gold's cost_by_tag of the tagged resources, as the loader writes it
    conn.execute(
        sa.text(
            "INSERT INTO mart.agg_cost_by_tag (charge_date, subscription_key, tag_key, tag_value, currency_key,"
            " actual_cost, amortized_cost) VALUES (:d, :sub, 'env', 'prod', :cur, :cost, :cost)"
        ),
        [{k: r[k] for k in ("d", "sub", "cur", "cost")} for r in fact_rows if r["res"] in (3, 4)],
    )
    conn.execute(sa.text("INSERT INTO mart.dim_tag (tag_id, tag_key, tag_value) VALUES (1, 'env', 'prod')"))
    conn.execute(sa.text("INSERT INTO mart.bridge_resource_tag (resource_key, tag_id) VALUES (3, 1), (4, 1)"))


@pytest.fixture
def estate(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        insert_dimensions(conn)
        insert_costs(conn)
    yield engine
    engine.dispose()
