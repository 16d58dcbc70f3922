"""Tag hygiene, allocation rules and showback (issue 24 items 1-3): rule set versions, allocated cost, tag coverage.

Revision ID: 0019_allocation
Revises: 0018_budget_scopes

- mart.allocation_rulesets: every saved rule set (aliases, inherited tags, ordered rules) as a numbered,
  immutable version with its YAML, who saved it and why; the highest version is the one in force.
- mart.cost_allocation: cost per month, currency, owner and source row (subscription, group, service,
  resource) with the rule (FOCUS AllocatedMethodId) and rules version that produced it; owner null = the
  unallocated share, with the reason in `method` (unmatched / no_basis). Replaced whole on every recompute.
- mart.tag_coverage: per month, currency and canonical tag key (after aliases and inheritance) the cost of
  resources without the key, for the untagged share over time.
- mart.allocation_state: one row, the version the two tables above were computed with, and when.
The reader may read all four (the page and the agent read them).
"""

from alembic import op

revision = "0019_allocation"
down_revision = "0018_budget_scopes"
branch_labels = None
depends_on = None

SUM = "numeric(38,12)"
_TABLES = ("allocation_rulesets", "cost_allocation", "tag_coverage", "allocation_state")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE mart.allocation_rulesets (
            version integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            rules jsonb NOT NULL,
            rules_yaml text NOT NULL,
            sha256 text NOT NULL,
            comment text NOT NULL DEFAULT '',
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute(
        f"""
        CREATE TABLE mart.cost_allocation (
            charge_month date NOT NULL,
            billing_currency text NOT NULL,
            owner text,
            allocated_method_id text NOT NULL,
            method text NOT NULL CHECK (method IN ('direct', 'split', 'unmatched', 'no_basis')),
            share double precision NOT NULL,
            subscription_id text NOT NULL,
            resource_group text NOT NULL,
            service_name text NOT NULL,
            resource_id text NOT NULL,
            actual_cost {SUM},
            amortized_cost {SUM},
            allocated_method_details text NOT NULL,
            rules_version integer NOT NULL
        )"""
    )
    op.execute("CREATE INDEX ix_cost_allocation_month_owner ON mart.cost_allocation (charge_month, owner)")
    op.execute(
        f"""
        CREATE TABLE mart.tag_coverage (
            charge_month date NOT NULL,
            billing_currency text NOT NULL,
            tag_key text NOT NULL,
            total_cost {SUM},
            untagged_cost {SUM},
            rules_version integer NOT NULL,
            PRIMARY KEY (charge_month, billing_currency, tag_key)
        )"""
    )
    op.execute(
        """
        CREATE TABLE mart.allocation_state (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            rules_version integer,
            computed_at timestamptz NOT NULL DEFAULT now(),
            rows bigint NOT NULL DEFAULT 0,
            run_id text
        )"""
    )
    for table in _TABLES:
        op.execute(f"GRANT SELECT ON mart.{table} TO costlake_reader")


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.execute(f"DROP TABLE IF EXISTS mart.{table}")
