"""Subscription budgets name their subscription as silver does: `/subscriptions/<lower-case guid>`.

Revision ID: 0008_budget_subscription_ids
Revises: 0007_stage_progress

Silver now keeps one spelling per subscription (commit 014b44c), so mart.dim_subscription.subscription_id
is the ARM form. A budget saved earlier with the bare guid (any case, in braces) or a longer ARM path
would match no subscription and never alert; this rewrites those, as the budgets code does on save.
Any other value (a name, an id that is not a guid) is left as it is.

The pattern is backend/sources/ids.py's in Postgres' regex dialect, kept frozen in
backend/mart/subscription_sql.py (shared with 0009, which rewrites the analytics tables the same way).
tests/mart/test_migrate.py checks it agrees with the Python rule.
"""

import sqlalchemy as sa
from alembic import op

from backend.mart.subscription_sql import PATTERN_PARAM, SUBSCRIPTION_GUID, canonical_subscription_sql

revision = "0008_budget_subscription_ids"
down_revision = "0007_stage_progress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            f"""
            UPDATE mart.budgets b SET scope_value = m.canonical
            FROM (SELECT budget_id, {canonical_subscription_sql("scope_value")} AS canonical
                  FROM mart.budgets WHERE scope_type = 'subscription') m
            WHERE b.budget_id = m.budget_id AND m.canonical IS NOT NULL AND b.scope_value <> m.canonical
            """
        ).bindparams(**{PATTERN_PARAM: SUBSCRIPTION_GUID})
    )


def downgrade() -> None:
    # Nothing to undo: the bare spelling a user typed is not kept, and the canonical one is what
    # dim_subscription holds for every lake rebuilt since.
    pass
