"""Operational schema `ops`: source cursors (which days each source has delivered to bronze).

Revision ID: 0001_ops
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_ops"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS ops")
    # A row per (source, scope, metric, day) that bronze holds; advanced only after the bronze commit.
    op.create_table(
        "source_cursors",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),  # subscription id, billing account, or file sha256
        sa.Column("metric", sa.Text, nullable=False),  # ActualCost / AmortizedCost / FocusCost / file
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("batch_id", sa.Text, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("row_count", sa.BigInteger),
        sa.Column("reported_total", sa.Numeric(38, 12)),  # what the source said the day cost (reconciliation)
        sa.Column("currency", sa.Text),
        sa.PrimaryKeyConstraint("source", "scope", "metric", "day"),
        schema="ops",
    )
    # Batches handed to Kafka but not yet confirmed in bronze; the cursor moves when bronze holds them.
    op.create_table(
        "source_batches",
        sa.Column("batch_id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False, server_default="sent"),  # sent / in_bronze / committed
        sa.Column("detail", sa.JSON),
        schema="ops",
    )


def downgrade() -> None:
    op.drop_table("source_batches", schema="ops")
    op.drop_table("source_cursors", schema="ops")
    op.execute("DROP SCHEMA IF EXISTS ops")
