"""Notification channels and deliveries (issue 23): reserved slot, filled in by the notifications work.

Revision ID: 0015_notifications
Revises: 0014_fx_rates
"""

revision = "0015_notifications"
down_revision = "0014_fx_rates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
