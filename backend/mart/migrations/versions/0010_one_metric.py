"""Actual and amortized cost may be null in the mart: null means "not available", never 0.

Revision ID: 0010_one_metric
Revises: 0009_analytics_subscription_ids

An Azure ActualCost export alone says nothing about amortized cost (and an AmortizedCost export nothing
about actual cost). Gold keeps the missing metric null for every (scope, day) no report of it covers, and
0 for rows a covering report does not mention; the mart used to require both and refused a one-metric
import at the first COPY. What is really required is a day and the dimension keys.
"""

from alembic import op

revision = "0010_one_metric"
down_revision = "0009_analytics_subscription_ids"
branch_labels = None
depends_on = None

_TABLES = ("fact_cost_daily", "agg_cost_daily", "agg_cost_monthly", "agg_cost_by_tag", "agg_cost_resource_monthly")


def upgrade() -> None:
    for table in _TABLES:
        for column in ("actual_cost", "amortized_cost"):
            # On the partitioned fact table this reaches every month partition too.
            op.execute(f"ALTER TABLE mart.{table} ALTER COLUMN {column} DROP NOT NULL")


def downgrade() -> None:
    for table in _TABLES:
        for column in ("actual_cost", "amortized_cost"):
            op.execute(f"UPDATE mart.{table} SET {column} = 0 WHERE {column} IS NULL")
            op.execute(f"ALTER TABLE mart.{table} ALTER COLUMN {column} SET NOT NULL")
