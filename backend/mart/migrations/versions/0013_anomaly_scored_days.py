"""Which charge days anomaly detection has scored, per billing currency, and what gold held for them then.

Revision ID: 0013_anomaly_scored_days
Revises: 0012_providers

Analytics used to score only the last ANOMALY_LOOKBACK_DAYS, so a first run, a backfill or an imported older
month was never scored. mart.anomaly_scored_days records each (currency, charge_date) a run scored, with a
fingerprint of that day's gold rows and of the detector configuration: a day missing here, or whose
fingerprint no longer matches gold (re-rated, re-imported) or the settings (levels, metrics, detector
tunables), is scored by the next run. It is written in the same transaction as the anomalies it produced.
"""

from alembic import op

revision = "0013_anomaly_scored_days"
down_revision = "0012_providers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE mart.anomaly_scored_days (
            currency text NOT NULL,
            charge_date date NOT NULL,
            data_fingerprint text NOT NULL,
            config_fingerprint text NOT NULL,
            run_id text,
            scored_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (currency, charge_date)
        )"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS mart.anomaly_scored_days")
