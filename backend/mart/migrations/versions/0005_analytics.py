"""Analytics additions: period forecast totals (end of month, next N days) with their own intervals.

Revision ID: 0005_analytics
Revises: 0003_mart

A sum's interval is not the sum of the daily intervals, so period totals get their own rows.
"""

from alembic import op

revision = "0005_analytics"
down_revision = "0003_mart"
branch_labels = None
depends_on = None

MONEY = "numeric(28,12)"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE mart.forecast_totals (
            scope_type text NOT NULL,         -- total / subscription / resource_group / service / tag:<key>
            scope_value text NOT NULL,
            metric text NOT NULL CHECK (metric IN ('actual', 'amortized')),
            period text NOT NULL CHECK (period IN ('month_end', 'next_days')),
            period_start date NOT NULL,
            period_end date NOT NULL,         -- inclusive
            actual_to_date {MONEY} NOT NULL,  -- cost already incurred inside the period
            point {MONEY} NOT NULL,           -- the period's forecast total (actual to date included)
            lower_bound {MONEY},
            upper_bound {MONEY},
            interval_level numeric,
            currency text,
            method text NOT NULL,
            backtest_metric text,
            backtest_error numeric,
            as_of date NOT NULL,              -- last day with data
            generated_at timestamptz NOT NULL DEFAULT now(),
            run_id text,
            PRIMARY KEY (scope_type, scope_value, metric, period, generated_at)
        )"""
    )
    op.execute(
        "CREATE INDEX ix_forecast_totals_latest ON mart.forecast_totals (scope_type, metric, period, generated_at DESC)"
    )
    op.execute("GRANT SELECT ON mart.forecast_totals TO costlake_reader")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS mart.forecast_totals")
