"""Analytics rows are keyed by their billing currency: anomalies, forecasts and feedback per currency.

Revision ID: 0011_analytics_currency
Revises: 0010_one_metric

Analytics scores and forecasts every series per billing currency (amounts in two currencies are never
added), but the mart's keys held no currency: two currencies' anomalies on one member and day could not
both be stored, and each currency's forecast had to be its own generation (generated_at a microsecond
apart) to fit the primary keys. This puts the currency in the keys:
- mart.anomalies: currency NOT NULL ('' = unknown, as analytics names a series without one), and
  uq_anomalies (same name, the writer's ON CONFLICT target) on (level, dimension_value, metric, currency,
  charge_date).
- mart.forecasts, mart.forecast_totals: currency NOT NULL and in the primary key; ix_forecasts_latest
  leads with the currency too, since every reader asks for one currency's latest generation.
- mart.anomaly_feedback.currency (nullable): the currency of the anomaly a verdict was given on, so the
  verdict keeps suppressing within that currency after the anomaly row is gone. Filled from the anomaly
  before anomalies' null currencies become '': a verdict on a row from before analytics was per currency
  (which summed every currency) stays null and, as before, covers every currency of the member.

No default on the NOT NULL columns: a writer that forgets the currency fails instead of filing its rows
under "unknown".
"""

from alembic import op

revision = "0011_analytics_currency"
down_revision = "0010_one_metric"
branch_labels = None
depends_on = None

_OLD_FORECAST_KEYS = {
    "forecasts": "scope_type, scope_value, metric, forecast_date, generated_at",
    "forecast_totals": "scope_type, scope_value, metric, period, generated_at",
}
_NEW_FORECAST_KEYS = {
    "forecasts": "scope_type, scope_value, metric, currency, forecast_date, generated_at",
    "forecast_totals": "scope_type, scope_value, metric, currency, period, generated_at",
}


def upgrade() -> None:
    op.execute("ALTER TABLE mart.anomaly_feedback ADD COLUMN currency text")
    op.execute(
        "UPDATE mart.anomaly_feedback f SET currency = a.currency FROM mart.anomalies a"
        " WHERE a.anomaly_id = f.anomaly_id AND a.currency IS NOT NULL"
    )
    # The old key is a subset of the new one, so no two rows can clash once currency joins it.
    op.execute("UPDATE mart.anomalies SET currency = '' WHERE currency IS NULL")
    op.execute("ALTER TABLE mart.anomalies ALTER COLUMN currency SET NOT NULL")
    op.execute("ALTER TABLE mart.anomalies DROP CONSTRAINT uq_anomalies")
    op.execute(
        "ALTER TABLE mart.anomalies ADD CONSTRAINT uq_anomalies"
        " UNIQUE (level, dimension_value, metric, currency, charge_date)"
    )
    for table, key in _NEW_FORECAST_KEYS.items():
        op.execute(f"UPDATE mart.{table} SET currency = '' WHERE currency IS NULL")
        op.execute(f"ALTER TABLE mart.{table} ALTER COLUMN currency SET NOT NULL")
        op.execute(f"ALTER TABLE mart.{table} DROP CONSTRAINT {table}_pkey")
        op.execute(f"ALTER TABLE mart.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})")
    op.execute("DROP INDEX mart.ix_forecasts_latest")
    op.execute(
        "CREATE INDEX ix_forecasts_latest ON mart.forecasts (scope_type, scope_value, metric, currency, generated_at DESC)"
    )


def _downgrade_anomalies() -> None:
    # The old key holds one row per (level, member, metric, day): of several currencies' rows the judged one is
    # kept, else the most severe (as the writer did before this revision); feedback on a dropped row points at
    # the kept one, so its marked day still bounds the suppression.
    op.execute(
        """
        CREATE TEMPORARY TABLE currency_anomalies ON COMMIT DROP AS
        SELECT anomaly_id, first_value(anomaly_id) OVER (
                   PARTITION BY level, dimension_value, metric, charge_date
                   ORDER BY status <> 'open' DESC, severity DESC NULLS LAST, anomaly_id) AS keeper
        FROM mart.anomalies
        """
    )
    op.execute(
        "UPDATE mart.anomaly_feedback f SET anomaly_id = t.keeper FROM currency_anomalies t"
        " WHERE f.anomaly_id = t.anomaly_id AND t.anomaly_id <> t.keeper"
    )
    op.execute(
        "DELETE FROM mart.anomalies a USING currency_anomalies t"
        " WHERE a.anomaly_id = t.anomaly_id AND t.anomaly_id <> t.keeper"
    )
    op.execute("ALTER TABLE mart.anomalies DROP CONSTRAINT uq_anomalies")
    op.execute(
        "ALTER TABLE mart.anomalies ADD CONSTRAINT uq_anomalies UNIQUE (level, dimension_value, metric, charge_date)"
    )
    op.execute("ALTER TABLE mart.anomalies ALTER COLUMN currency DROP NOT NULL")
    op.execute("ALTER TABLE mart.anomaly_feedback DROP COLUMN currency")


def _downgrade_forecasts() -> None:
    # One run's currencies share a generated_at under the new key. The old one needs each currency to be its own
    # generation, as the writer made them before: the n-th currency of a generation (in code order) moves
    # n microseconds later, the same shift in both tables, so a generation's days and totals stay together.
    op.execute(
        """
        CREATE TEMPORARY TABLE currency_generations ON COMMIT DROP AS
        SELECT generated_at, currency,
               (dense_rank() OVER (PARTITION BY generated_at ORDER BY currency) - 1) AS shift
        FROM (SELECT generated_at, currency FROM mart.forecasts
              UNION SELECT generated_at, currency FROM mart.forecast_totals) g
        """
    )
    for table, key in _OLD_FORECAST_KEYS.items():
        op.execute(f"ALTER TABLE mart.{table} DROP CONSTRAINT {table}_pkey")
        op.execute(
            f"UPDATE mart.{table} t SET generated_at = t.generated_at + g.shift * interval '1 microsecond'"
            " FROM currency_generations g"
            " WHERE g.generated_at = t.generated_at AND g.currency = t.currency AND g.shift > 0"
        )
        op.execute(f"ALTER TABLE mart.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})")
        op.execute(f"ALTER TABLE mart.{table} ALTER COLUMN currency DROP NOT NULL")
    op.execute("DROP INDEX mart.ix_forecasts_latest")
    op.execute(
        "CREATE INDEX ix_forecasts_latest ON mart.forecasts (scope_type, scope_value, metric, generated_at DESC)"
    )


def downgrade() -> None:
    # Currencies written as '' stay '': the code before this revision reads '' as an unknown currency too.
    _downgrade_anomalies()
    _downgrade_forecasts()
