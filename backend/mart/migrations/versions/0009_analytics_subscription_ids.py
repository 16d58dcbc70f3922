"""Subscription-level anomalies, feedback and forecasts name their subscription as silver does.

Revision ID: 0009_analytics_subscription_ids
Revises: 0008_budget_subscription_ids

The analytics tables key a subscription-level row by the member's natural key, which silver now spells
`/subscriptions/<lower-case guid>` (commit 014b44c). Rows written before hold the bare guid (any case) for
Azure-report subscriptions, so after a rebuild an 'expected' verdict in mart.anomaly_feedback no longer
matches the re-detected anomaly and stops suppressing it, and an anomaly already judged comes back as a
second, open row. This rewrites the member of the 'subscription' level in mart.anomalies,
mart.anomaly_feedback, mart.forecasts and mart.forecast_totals with 0008's rule (a name or a non-guid id
is left as it is).

Before the change one subscription could appear under both spellings (FOCUS files and Azure reports), so
the rewrite can make two rows share a unique key:
- anomalies (one per level, member, metric, day): the row already in the canonical form is kept, else a
  judged one, else the oldest; a user's judgement on a dropped row carries over to a kept open row (as a
  re-detection keeps it, backend/analytics/store.py), and feedback pointing at a dropped row points at
  the kept one, so its marked day and impact still bound the suppression.
- forecasts and forecast totals of one generation: the canonical row is kept. Each half forecast only
  part of the subscription, and every run appends a new generation that supersedes it.
"""

import sqlalchemy as sa
from alembic import op

from backend.mart.subscription_sql import PATTERN_PARAM, SUBSCRIPTION_GUID, canonical_subscription_sql

revision = "0009_analytics_subscription_ids"
down_revision = "0008_budget_subscription_ids"
branch_labels = None
depends_on = None

# table, and the column that with the member, metric and generated_at makes a row unique (its primary key)
_FORECAST_TABLES = (
    ("forecasts", "forecast_date"),
    ("forecast_totals", "period"),
)


def _run(sql: str) -> None:
    op.execute(sa.text(sql).bindparams(**{PATTERN_PARAM: SUBSCRIPTION_GUID}))


def _anomalies() -> None:
    # Which row of each (metric, day, canonical member) group survives; the others merge into it.
    _run(
        f"""
        CREATE TEMPORARY TABLE sub_anomalies ON COMMIT DROP AS
        SELECT anomaly_id, canonical,
               first_value(anomaly_id) OVER (
                   PARTITION BY metric, charge_date, canonical
                   ORDER BY dimension_value = canonical DESC, status <> 'open' DESC, anomaly_id) AS keeper
        FROM (SELECT anomaly_id, metric, charge_date, dimension_value, status,
                     {canonical_subscription_sql("dimension_value")} AS canonical
              FROM mart.anomalies WHERE level = 'subscription') a
        WHERE canonical IS NOT NULL
        """
    )
    op.execute(
        """
        UPDATE mart.anomalies k SET status = j.status, feedback = coalesce(k.feedback, j.feedback)
        FROM (SELECT DISTINCT ON (t.keeper) t.keeper, a.status, a.feedback
              FROM sub_anomalies t JOIN mart.anomalies a USING (anomaly_id)
              WHERE t.anomaly_id <> t.keeper AND a.status <> 'open'
              ORDER BY t.keeper, a.anomaly_id) j
        WHERE k.anomaly_id = j.keeper AND k.status = 'open'
        """
    )
    op.execute(
        """
        UPDATE mart.anomaly_feedback f SET anomaly_id = t.keeper
        FROM sub_anomalies t WHERE f.anomaly_id = t.anomaly_id AND t.anomaly_id <> t.keeper
        """
    )
    op.execute(
        "DELETE FROM mart.anomalies a USING sub_anomalies t WHERE a.anomaly_id = t.anomaly_id "
        "AND t.anomaly_id <> t.keeper"
    )
    # Only keepers are left in each group, so no renamed row meets another on the unique key.
    op.execute(
        """
        UPDATE mart.anomalies a SET dimension_value = t.canonical
        FROM sub_anomalies t WHERE a.anomaly_id = t.anomaly_id AND a.dimension_value <> t.canonical
        """
    )


def _feedback() -> None:
    _run(
        f"""
        UPDATE mart.anomaly_feedback f SET dimension_value = m.canonical
        FROM (SELECT feedback_id, {canonical_subscription_sql("dimension_value")} AS canonical
              FROM mart.anomaly_feedback WHERE level = 'subscription') m
        WHERE f.feedback_id = m.feedback_id AND m.canonical IS NOT NULL AND f.dimension_value <> m.canonical
        """
    )


def _forecasts(table: str, slot: str) -> None:
    # These tables have no surrogate key: a row is addressed by ctid, stable within this transaction.
    ranked = f"""
        SELECT ctid AS row_id, canonical,
               row_number() OVER (PARTITION BY metric, {slot}, generated_at, canonical
                                  ORDER BY scope_value = canonical DESC, scope_value) AS rank
        FROM (SELECT ctid, metric, {slot}, generated_at, scope_value,
                     {canonical_subscription_sql("scope_value")} AS canonical
              FROM mart.{table} WHERE scope_type = 'subscription') f
        WHERE canonical IS NOT NULL"""
    _run(f"DELETE FROM mart.{table} t USING ({ranked}) r WHERE t.ctid = r.row_id AND r.rank > 1")
    _run(
        f"UPDATE mart.{table} t SET scope_value = r.canonical FROM ({ranked}) r "
        "WHERE t.ctid = r.row_id AND t.scope_value <> r.canonical"
    )


def upgrade() -> None:
    _anomalies()
    _feedback()
    for table, slot in _FORECAST_TABLES:
        _forecasts(table, slot)


def downgrade() -> None:
    # Nothing to undo: the bare spellings are not kept, and the canonical one is what every run since writes.
    pass
