"""Costs converted to a reporting currency: converted measures on the fact and aggregates, and the rates used.

Revision ID: 0014_fx_rates
Revises: 0013_anomaly_scored_days

Gold converts actual and amortized cost with an imported FX rates file (backend/sources/fx.py); the
fact gains amortized_cost_converted beside actual_cost_converted, and the aggregates both, so a page
can show the whole estate in one currency from the same tables it reads today. Null means "no rate
for that currency and month" (never 0). Rows loaded before this revision have null there until their
month is loaded again (gold recomputes every month when rates first arrive).

mart.fx_rates holds the imported rates (one per month and currency pair, with the date the rate is
of) and mart.fx_reporting_currency the currency gold converted to, so the pages can say what a
converted figure is, through the read-only role.
"""

from alembic import op

revision = "0014_fx_rates"
down_revision = "0013_anomaly_scored_days"
branch_labels = None
depends_on = None

MONEY = "numeric(28,12)"
SUM = "numeric(38,12)"
_AGGREGATES = ("agg_cost_daily", "agg_cost_monthly", "agg_cost_resource_monthly")


def upgrade() -> None:
    # On the partitioned fact table this reaches every month partition too.
    op.execute(f"ALTER TABLE mart.fact_cost_daily ADD COLUMN amortized_cost_converted {MONEY}")
    for table in _AGGREGATES:
        op.execute(
            f"ALTER TABLE mart.{table} ADD COLUMN actual_cost_converted {SUM}, "
            f"ADD COLUMN amortized_cost_converted {SUM}"
        )
    op.execute(
        f"""
        CREATE TABLE mart.fx_rates (
            rate_month date NOT NULL,
            from_currency text NOT NULL,
            to_currency text NOT NULL,
            rate {MONEY} NOT NULL CHECK (rate > 0),
            rate_date date NOT NULL,
            run_id text,
            PRIMARY KEY (rate_month, from_currency, to_currency)
        )"""
    )
    # One row at most: the currency the loaded months are converted to (none: nothing is converted).
    op.execute(
        """
        CREATE TABLE mart.fx_reporting_currency (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            currency text NOT NULL,
            run_id text,
            loaded_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    for table in ("fx_rates", "fx_reporting_currency"):
        op.execute(f"GRANT SELECT ON mart.{table} TO costlake_reader")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS mart.fx_reporting_currency")
    op.execute("DROP TABLE IF EXISTS mart.fx_rates")
    for table in _AGGREGATES:
        op.execute(f"ALTER TABLE mart.{table} DROP COLUMN actual_cost_converted, DROP COLUMN amortized_cost_converted")
    op.execute("ALTER TABLE mart.fact_cost_daily DROP COLUMN amortized_cost_converted")
