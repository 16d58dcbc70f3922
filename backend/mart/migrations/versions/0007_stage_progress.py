"""Stage progress marks: which upstream Delta version gold and the mart have fully processed.

Revision ID: 0007_stage_progress
Revises: 0006_resource_monthly

A run killed after silver committed (or after gold) leaves gold or the mart behind. The next run must
finish that work even when no new bronze arrives, so each stage records, after it succeeded, the
upstream table version it covered; the next run redoes the partitions that changed since. Written
after the stage's own commit (not atomically with it): a crash in between only repeats idempotent work.
"""

from alembic import op

revision = "0007_stage_progress"
down_revision = "0006_resource_monthly"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ops.stage_progress (
            stage text PRIMARY KEY,
            upstream_table text NOT NULL,
            upstream_version bigint NOT NULL,
            run_id text,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE ops.stage_progress")
