"""Waste and savings (issue 24): contracted cost and commitment use on the fact and aggregates; cost changes.

Revision ID: 0017_savings
Revises: 0016_auth_audit

The fact and its aggregates gain contracted_cost (FOCUS ContractedCost) and the effective cost that
commitments covered (commitment_used_cost) or left idle (commitment_unused_cost), so the Waste & savings
page can show list vs contracted vs effective cost and commitment utilisation from the tables it already
reads. Null means "the source does not carry it" (Azure exports have no ContractedCost), never 0. Rows
loaded before this revision have null there until their month is loaded again.

mart.resource_cost_changes holds gold's resource_cost_changes (resources whose cost started after a gap
or stopped before one), replaced per month by the loader, with natural ids (it is small and read by id).
"""

from alembic import op

revision = "0017_savings"
down_revision = "0016_auth_audit"
branch_labels = None
depends_on = None

MONEY = "numeric(28,12)"
SUM = "numeric(38,12)"
_MEASURES = ("contracted_cost", "commitment_used_cost", "commitment_unused_cost")
_AGGREGATES = ("agg_cost_daily", "agg_cost_monthly", "agg_cost_resource_monthly")


def upgrade() -> None:
    # Nullable without a default: metadata only, also on the partitioned fact (reaches every partition).
    op.execute("ALTER TABLE mart.fact_cost_daily " + ", ".join(f"ADD COLUMN {m} {MONEY}" for m in _MEASURES))
    for table in _AGGREGATES:
        op.execute(f"ALTER TABLE mart.{table} " + ", ".join(f"ADD COLUMN {m} {SUM}" for m in _MEASURES))
    op.execute(
        f"""
        CREATE TABLE mart.resource_cost_changes (
            charge_month date NOT NULL,
            event_date date NOT NULL,
            event text NOT NULL CHECK (event IN ('started', 'stopped')),
            resource_id text NOT NULL,
            subscription_id text NOT NULL,
            resource_group text NOT NULL,
            service_name text NOT NULL,
            currency_code text NOT NULL,
            daily_cost {MONEY},
            load_id bigint
        )"""
    )
    op.execute("CREATE INDEX ix_resource_cost_changes_month ON mart.resource_cost_changes (charge_month, event)")
    op.execute("GRANT SELECT ON mart.resource_cost_changes TO costlake_reader")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS mart.resource_cost_changes")
    for table in _AGGREGATES:
        op.execute(f"ALTER TABLE mart.{table} " + ", ".join(f"DROP COLUMN {m}" for m in _MEASURES))
    op.execute("ALTER TABLE mart.fact_cost_daily " + ", ".join(f"DROP COLUMN {m}" for m in _MEASURES))
