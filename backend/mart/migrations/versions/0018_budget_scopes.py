"""Budgets and anomaly settings users can trust (issue 24 item 5): reserved slot, filled by that work.

Revision ID: 0018_budget_scopes
Revises: 0017_savings
"""

revision = "0018_budget_scopes"
down_revision = "0017_savings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
