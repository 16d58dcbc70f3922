"""Source cursors keyed by billing currency: a day billed in two currencies reconciles per currency (issue 19).

Revision ID: 0020_cursor_currency
Revises: 0019_allocation

ops.source_cursors held one reported total per (source, scope, metric, day) with the first row's currency,
so a file whose scope bills a day in EUR and USD reported EUR = EUR + USD and reconciliation flagged both
currencies. The key gains `currency` ('' when the source names none); existing rows keep theirs.
"""

from alembic import op

revision = "0020_cursor_currency"
down_revision = "0019_allocation"
branch_labels = None
depends_on = None

_KEY = "source, scope, metric, day"


def upgrade() -> None:
    op.execute("UPDATE ops.source_cursors SET currency = '' WHERE currency IS NULL")
    op.execute(
        "ALTER TABLE ops.source_cursors ALTER COLUMN currency SET DEFAULT '', ALTER COLUMN currency SET NOT NULL"
    )
    op.execute("ALTER TABLE ops.source_cursors DROP CONSTRAINT source_cursors_pkey")
    op.execute(f"ALTER TABLE ops.source_cursors ADD CONSTRAINT source_cursors_pkey PRIMARY KEY ({_KEY}, currency)")


def downgrade() -> None:
    # The old key holds one row per day: a day's currencies are summed into its first currency's row
    # (what the old schema recorded), the others deleted.
    op.execute(
        f"""WITH s AS (SELECT {_KEY}, min(currency) AS keep, sum(row_count) AS rows, sum(reported_total) AS total
                      FROM ops.source_cursors GROUP BY {_KEY} HAVING count(*) > 1)
            UPDATE ops.source_cursors c SET row_count = s.rows, reported_total = s.total FROM s
            WHERE (c.source, c.scope, c.metric, c.day, c.currency) = (s.source, s.scope, s.metric, s.day, s.keep)"""
    )
    op.execute(
        f"""DELETE FROM ops.source_cursors c USING
              (SELECT {_KEY}, min(currency) AS keep FROM ops.source_cursors GROUP BY {_KEY} HAVING count(*) > 1) s
            WHERE (c.source, c.scope, c.metric, c.day) = (s.source, s.scope, s.metric, s.day) AND c.currency <> s.keep"""
    )
    op.execute("ALTER TABLE ops.source_cursors DROP CONSTRAINT source_cursors_pkey")
    op.execute(f"ALTER TABLE ops.source_cursors ADD CONSTRAINT source_cursors_pkey PRIMARY KEY ({_KEY})")
    op.execute("ALTER TABLE ops.source_cursors ALTER COLUMN currency DROP NOT NULL, ALTER COLUMN currency DROP DEFAULT")
