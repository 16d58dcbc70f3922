"""Notification channels and deliveries (issue 23): what was sent where, retried across runs, never sent twice.

Revision ID: 0015_notifications
Revises: 0014_fx_rates

- ops.notification_channels: channels added on Sources & settings (the NOTIFY_* settings define more).
  `target` is a webhook URL (usually embedding a token) or mail addresses: the read-only role gets no
  access to this table at all.
- ops.notification_events: one row per thing to tell (a failed run, a stale source, an anomaly digest, a
  budget threshold, a test); `dedup_key` is unique, so an event found again by a later run is not queued again.
- ops.notification_deliveries: one row per event and channel with status, attempts, last error and the
  time of the next attempt; (event, channel) is unique, so a message is never delivered twice to a channel.
- ops.notified_anomalies: anomalies already in a digest, by their natural key (the analytics writer may
  delete and re-insert a rescored anomaly under a new id).

They live in `ops`, not `mart`: mart's default privileges grant every new table to the reader. The reader
may read events and deliveries (no secrets: channels appear by name, errors are scrubbed).
"""

from alembic import op

revision = "0015_notifications"
down_revision = "0014_fx_rates"
branch_labels = None
depends_on = None

READER = "costlake_reader"
_EVENT_KINDS = "'run_failed', 'stale_data', 'anomalies', 'budget_alert', 'test'"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE ops.notification_channels (
            channel_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL UNIQUE,
            kind text NOT NULL CHECK (kind IN ('webhook', 'slack', 'teams', 'email')),
            target text NOT NULL,              -- URL with its token, or addresses: never granted to the reader
            events text[] NOT NULL CHECK (events <@ ARRAY[{_EVENT_KINDS}]::text[]),
            enabled boolean NOT NULL DEFAULT true,
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute(
        f"""
        CREATE TABLE ops.notification_events (
            event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind text NOT NULL CHECK (kind IN ({_EVENT_KINDS})),
            dedup_key text NOT NULL UNIQUE,    -- e.g. "run" + run id + status, "stale" + source + day
            subject text NOT NULL,
            payload jsonb NOT NULL,            -- the rendered message, so a retry sends what was first meant
            run_id text,
            created_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute("CREATE INDEX ix_notification_events_kind ON ops.notification_events (kind, created_at DESC)")
    op.execute(
        """
        CREATE TABLE ops.notification_deliveries (
            delivery_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id bigint NOT NULL REFERENCES ops.notification_events (event_id) ON DELETE CASCADE,
            channel text NOT NULL,             -- "settings", "page" or "budget" with the kind or id
            channel_name text NOT NULL,
            channel_kind text NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'retrying', 'delivered', 'failed', 'cancelled')),
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            last_attempt_at timestamptz,
            next_attempt_at timestamptz,       -- null: not due by itself (a test message is sent at once)
            delivered_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_notification_delivery_once UNIQUE (event_id, channel)
        )"""
    )
    op.execute(
        "CREATE INDEX ix_notification_deliveries_due ON ops.notification_deliveries (next_attempt_at)"
        " WHERE status IN ('pending', 'retrying')"
    )
    op.execute("CREATE INDEX ix_notification_deliveries_recent ON ops.notification_deliveries (created_at DESC)")
    op.execute(
        """
        CREATE TABLE ops.notified_anomalies (
            level text NOT NULL,
            dimension_value text NOT NULL,
            metric text NOT NULL,
            currency text NOT NULL,            -- '' when the anomaly has none
            charge_date date NOT NULL,
            event_id bigint REFERENCES ops.notification_events (event_id) ON DELETE SET NULL,
            notified_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (level, dimension_value, metric, currency, charge_date)
        )"""
    )
    op.execute(f"GRANT SELECT ON ops.notification_events, ops.notification_deliveries TO {READER}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON ops.notification_events, ops.notification_deliveries FROM {READER}")
    op.execute("DROP TABLE IF EXISTS ops.notified_anomalies")
    op.execute("DROP TABLE IF EXISTS ops.notification_deliveries")
    op.execute("DROP TABLE IF EXISTS ops.notification_events")
    op.execute("DROP TABLE IF EXISTS ops.notification_channels")
