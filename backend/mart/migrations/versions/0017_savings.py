"""Waste and savings (issue 24): reserved slot, filled in by the waste and savings work.

Revision ID: 0017_savings
Revises: 0016_auth_audit
"""

revision = "0017_savings"
down_revision = "0016_auth_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
