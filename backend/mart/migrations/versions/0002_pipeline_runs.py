"""Pipeline run history: a row per run and per step (status, timings, row counts, error) for the UI and crash recovery.

Revision ID: 0002_pipeline_runs
Revises: 0001_ops
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_pipeline_runs"
down_revision = "0001_ops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("trigger", sa.Text, nullable=False),  # schedule:<job id> / manual / cli
        sa.Column("steps", sa.JSON, nullable=False),  # the steps asked for, in order
        sa.Column("sources", sa.JSON),
        # running / succeeded / failed / abandoned (its process died; set by the next runner)
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("host", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("rows_in", sa.BigInteger),
        sa.Column("rows_out", sa.BigInteger),
        schema="ops",
    )
    op.create_index("ix_pipeline_runs_started", "pipeline_runs", [sa.text("started_at DESC")], schema="ops")
    op.create_table(
        "pipeline_steps",
        sa.Column("run_id", sa.Text, sa.ForeignKey("ops.pipeline_runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),  # pending / running / succeeded / failed / skipped / abandoned
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("rows_in", sa.BigInteger),
        sa.Column("rows_out", sa.BigInteger),
        sa.Column("detail", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.PrimaryKeyConstraint("run_id", "step"),
        schema="ops",
    )
    op.create_table(
        "pipeline_logs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False, index=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("logger", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        schema="ops",
    )


def downgrade() -> None:
    op.drop_table("pipeline_logs", schema="ops")
    op.drop_table("pipeline_steps", schema="ops")
    op.drop_index("ix_pipeline_runs_started", table_name="pipeline_runs", schema="ops")
    op.drop_table("pipeline_runs", schema="ops")
