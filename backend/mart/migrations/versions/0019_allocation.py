"""Tag hygiene, allocation rules and showback (issue 24 items 1-3): reserved slot, filled by that work.

Revision ID: 0019_allocation
Revises: 0018_budget_scopes
"""

revision = "0019_allocation"
down_revision = "0018_budget_scopes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
