"""Budgets scoped by every dimension they name, their forecasts kept, and anomaly settings per level (issue 24 item 5).

Revision ID: 0018_budget_scopes
Revises: 0017_savings

- `mart.budgets.filters` (jsonb, {dimension: [natural keys]}, AND across dimensions, OR within one): a budget
  narrows its scope by subscription, service, region, provider or tag as well. A resource-group budget keeps
  its subscription here: group names such as NetworkWatcherRG exist in every subscription, and the evaluator
  used to add them all up.
- Existing resource-group budgets: a group name found in exactly one subscription gets that subscription; any
  other (several subscriptions, or none loaded yet) keeps its row and lists the candidates in
  `scope_candidates`, which the Budgets page asks the user to choose from. Nothing is guessed; the evaluator
  does not alert on a budget that still has candidates.
- `mart.budget_forecasts`: per budget and period, the forecast the evaluator made on the budget's own
  series, with its backtest error (MAPE of the horizon total over weekly origins, and the window it covers)
  and the day the budget is expected to be exceeded (null: not expected this period).
- `ops.anomaly_settings`: sensitivity, history window and minimum impacts per analysis level; a null column
  means the environment's default (ANOMALY_*).
"""

from alembic import op

revision = "0018_budget_scopes"
down_revision = "0017_savings"
branch_labels = None
depends_on = None

READER = "costlake_reader"
MONEY = "numeric(28,12)"
# mart.v_budgets as 0003 made it; the new columns go at the end (CREATE OR REPLACE VIEW may only append).
_V_BUDGETS = """
    SELECT budget_id, name, scope_type, scope_value, tag_key, metric, amount, currency, period,
           actual_thresholds, forecast_thresholds, webhook_url IS NOT NULL AS has_webhook,
           enabled, created_at, updated_at"""


def upgrade() -> None:
    op.execute("ALTER TABLE mart.budgets ADD COLUMN filters jsonb NOT NULL DEFAULT '{}'")
    op.execute("ALTER TABLE mart.budgets ADD COLUMN scope_candidates text[]")
    op.execute(
        "ALTER TABLE mart.budgets ADD CONSTRAINT ck_budgets_filters_object CHECK (jsonb_typeof(filters) = 'object')"
    )
    # The frozen rule of backend/analytics/budgets.resolve_group_subscription: one subscription has the group.
    op.execute(
        """
        WITH candidates AS (
            SELECT b.budget_id,
                   coalesce(array_agg(DISTINCT g.subscription_id ORDER BY g.subscription_id)
                            FILTER (WHERE g.subscription_id IS NOT NULL), '{}') AS subs
            FROM mart.budgets b
            LEFT JOIN mart.dim_resource_group g ON g.resource_group = b.scope_value AND g.subscription_id <> ''
            WHERE b.scope_type = 'resource_group'
            GROUP BY b.budget_id)
        UPDATE mart.budgets b SET
            filters = CASE WHEN cardinality(c.subs) = 1
                           THEN b.filters || jsonb_build_object('subscription', to_jsonb(c.subs))
                           ELSE b.filters END,
            scope_candidates = CASE WHEN cardinality(c.subs) = 1 THEN NULL ELSE c.subs END
        FROM candidates c WHERE c.budget_id = b.budget_id"""
    )
    op.execute(f"GRANT SELECT (filters, scope_candidates) ON mart.budgets TO {READER}")
    op.execute(f"CREATE OR REPLACE VIEW mart.v_budgets AS {_V_BUDGETS}, filters, scope_candidates FROM mart.budgets")

    op.execute(
        f"""
        CREATE TABLE mart.budget_forecasts (
            budget_id bigint NOT NULL REFERENCES mart.budgets (budget_id) ON DELETE CASCADE,
            period_start date NOT NULL,
            period_end date NOT NULL,
            as_of date NOT NULL,              -- the last charge day the spend covers
            currency text NOT NULL,
            spent {MONEY} NOT NULL,
            forecast_total {MONEY},           -- spent + forecast of the rest of the period; null: no forecast
            lower_bound {MONEY},
            upper_bound {MONEY},
            method text,
            backtest_metric text,             -- 'mape_horizon_total': MAPE of the horizon's total
            backtest_error numeric,           -- e.g. 0.08 = 8 %; null when the history is too short to backtest
            backtest_start date,              -- the window the backtest origins and their horizons cover
            backtest_end date,
            exceed_date date,                 -- first day spend is expected to pass the amount; null: not this period
            evaluated_at timestamptz NOT NULL DEFAULT now(),
            run_id text,
            PRIMARY KEY (budget_id, period_start)
        )"""
    )

    op.execute(
        """
        CREATE TABLE ops.anomaly_settings (
            level text PRIMARY KEY,           -- total / subscription / resource_group / service / provider / tag:<key>
            sensitivity double precision CHECK (sensitivity > 0),
            history_days integer CHECK (history_days BETWEEN 14 AND 365),
            min_cost_impact double precision CHECK (min_cost_impact >= 0),
            min_relative_impact double precision CHECK (min_relative_impact >= 0),
            updated_by text,
            updated_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute(f"GRANT SELECT ON ops.anomaly_settings TO {READER}")


def downgrade() -> None:
    op.execute("DROP TABLE ops.anomaly_settings")
    op.execute("DROP TABLE mart.budget_forecasts")
    op.execute(f"DROP VIEW mart.v_budgets; CREATE VIEW mart.v_budgets AS {_V_BUDGETS} FROM mart.budgets")
    op.execute(f"GRANT SELECT ON mart.v_budgets TO {READER}")
    op.execute("ALTER TABLE mart.budgets DROP CONSTRAINT ck_budgets_filters_object")
    op.execute("ALTER TABLE mart.budgets DROP COLUMN scope_candidates")
    op.execute("ALTER TABLE mart.budgets DROP COLUMN filters")
