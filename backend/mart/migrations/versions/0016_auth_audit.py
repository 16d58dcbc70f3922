"""Users' writes audited (issue 22): reserved slot, filled in by the sign-in and roles work.

Revision ID: 0016_auth_audit
Revises: 0015_notifications
"""

revision = "0016_auth_audit"
down_revision = "0015_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
