"""Users' writes audited (issue 22): ops.user_audit, one row per write and per refused attempt, with who did it.

Revision ID: 0016_auth_audit
Revises: 0015_notifications

In ops, not mart: the read-only role the pages and the agent use gets no grant on it (who changed what
is for admins, read through the owner engine), and the agent's SQL cannot list people's addresses.
"""

from alembic import op

revision = "0016_auth_audit"
down_revision = "0015_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ops.user_audit (
            audit_id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            who text NOT NULL,
            role text NOT NULL,
            action text NOT NULL,
            target text,
            outcome text NOT NULL DEFAULT 'done' CHECK (outcome IN ('done', 'denied')),
            detail jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX ix_user_audit_at ON ops.user_audit (at DESC)")
    op.execute("CREATE INDEX ix_user_audit_who ON ops.user_audit (who, at DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ops.user_audit")
