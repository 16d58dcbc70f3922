"""Resource-grain monthly aggregate for the explorer, and no row-by-row resource index on the fact.

Revision ID: 0006_resource_monthly
Revises: 0005_analytics

- `agg_cost_resource_monthly`: the fact summed per month over every dimension key (resource and meter
  included). A month is ~1M fact rows but only tens of thousands of resource x meter rows, so "top
  resources this month" and tag/resource views at monthly grain read it instead of the fact. The loader
  rebuilds it for the months it swaps, in the same transaction.
- The fact's btree on (resource_key, charge_date) goes: building it was about a quarter of each month's
  COPY time in the load, and the page queries it served now read the aggregate. Drill-downs at daily
  grain scan the (month-pruned, BRIN-on-date) partitions instead.
- Existing data is backfilled from the fact, so an upgraded mart answers at once.
- Frozen SQL, as in 0003_mart.
"""

from alembic import op

revision = "0006_resource_monthly"
down_revision = "0005_analytics"
branch_labels = None
depends_on = None

SUM = "numeric(38,12)"
KEYS = [
    "billing_account_key",
    "subscription_key",
    "resource_group_key",
    "resource_key",
    "region_key",
    "service_key",
    "meter_key",
    "pricing_model_key",
    "charge_category_key",
    "currency_key",
    "source_key",
]


def upgrade() -> None:
    keys = ",\n".join(f"{k} integer NOT NULL" for k in KEYS)
    op.execute(
        f"""
        CREATE TABLE mart.agg_cost_resource_monthly (
            charge_month date NOT NULL,
            {keys},
            actual_cost {SUM} NOT NULL,
            amortized_cost {SUM} NOT NULL,
            list_cost {SUM},
            quantity {SUM},
            fact_rows bigint NOT NULL
        )"""
    )
    # Month first: every page query names a date range; resource second for a one-resource drill-down.
    op.execute(
        "CREATE INDEX ix_agg_cost_resource_monthly ON mart.agg_cost_resource_monthly (charge_month, resource_key)"
    )
    cols = ", ".join(KEYS)
    op.execute(
        f"""
        INSERT INTO mart.agg_cost_resource_monthly (charge_month, {cols}, actual_cost, amortized_cost, list_cost,
            quantity, fact_rows)
        SELECT date_trunc('month', charge_date)::date, {cols}, sum(actual_cost), sum(amortized_cost),
               sum(list_cost), sum(quantity), count(*)
        FROM mart.fact_cost_daily GROUP BY date_trunc('month', charge_date)::date, {cols}"""
    )
    op.execute("GRANT SELECT ON mart.agg_cost_resource_monthly TO costlake_reader")
    op.execute("DROP INDEX IF EXISTS mart.ix_fact_cost_daily_resource")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_fact_cost_daily_resource ON mart.fact_cost_daily (resource_key, charge_date)")
    op.execute("DROP TABLE IF EXISTS mart.agg_cost_resource_monthly")
