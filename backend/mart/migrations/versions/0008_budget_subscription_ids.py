"""Subscription budgets name their subscription as silver does: `/subscriptions/<lower-case guid>`.

Revision ID: 0008_budget_subscription_ids
Revises: 0007_stage_progress

Silver now keeps one spelling per subscription (commit 014b44c), so mart.dim_subscription.subscription_id
is the ARM form. A budget saved earlier with the bare guid (any case, in braces) or a longer ARM path
would match no subscription and never alert; this rewrites those, as the budgets code does on save.
Any other value (a name, an id that is not a guid) is left as it is.

The pattern is backend/sources/ids.py's, frozen here in Postgres' regex dialect (a migration must not
follow later code changes): `[ \\t\\n\\v\\f\\r]` for Java's ASCII `\\s`, and an optional final line
terminator before the end, as Java's `$` allows. tests/mart/test_migrate.py checks both agree.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_budget_subscription_ids"
down_revision = "0007_stage_progress"
branch_labels = None
depends_on = None

_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_WS = r"[ \t\n\v\f\r]"
_END = r"(?:\r\n|[\n\r\u0085\u2028\u2029])?$"
SUBSCRIPTION_GUID = (
    rf"^{_WS}*(?:/subscriptions/(?={_GUID}(?:/.*)?{_WS}*{_END})|\{{?{_WS}*(?={_GUID}{_WS}*\}}?{_WS}*{_END}))({_GUID})"
)


def upgrade() -> None:
    op.execute(
        sa.text(
            """
            UPDATE mart.budgets b SET scope_value = m.canonical
            FROM (SELECT budget_id, '/subscriptions/' || lower((regexp_match(scope_value, :pattern, 'i'))[1])
                         AS canonical
                  FROM mart.budgets WHERE scope_type = 'subscription') m
            WHERE b.budget_id = m.budget_id AND m.canonical IS NOT NULL AND b.scope_value <> m.canonical
            """
        ).bindparams(pattern=SUBSCRIPTION_GUID)
    )


def downgrade() -> None:
    # Nothing to undo: the bare spelling a user typed is not kept, and the canonical one is what
    # dim_subscription holds for every lake rebuilt since.
    pass
