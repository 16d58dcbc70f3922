"""Pipeline-page helpers: the known steps, Kafka lag and lake freshness through the backend's own functions."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

log = logging.getLogger(__name__)


def known_steps() -> list[str]:
    """The pipeline's steps in order: the step registry when present, else the scheduler's list."""
    try:
        from backend.pipeline.steps import ALL_STEPS
    except ImportError:
        from scheduler.jobs import ALL_STEPS
    return list(ALL_STEPS)


def resolved_settings(pipeline):
    """Settings with the runtime's resolved endpoints (an embedded broker's address is not in the env)."""
    return pipeline.settings.model_copy(
        update={
            "kafka_bootstrap_servers": pipeline.endpoints.kafka_bootstrap_servers,
            "database_url": pipeline.endpoints.database_url,
        }
    )


def kafka_lag(pipeline) -> pd.DataFrame:
    from backend.ingest.monitor import consumer_lag

    rows = consumer_lag(resolved_settings(pipeline), pipeline.lake)
    return pd.DataFrame([r.__dict__ for r in rows])


def lake_freshness(lake) -> pd.DataFrame:
    """Per Delta table: version, rows, and when it was last written (from its commit log)."""
    rows = []
    for layer in ("bronze", "silver", "gold"):
        for table in lake.list_tables(layer):
            try:
                last = (lake.history(table, 1) or [{}])[0]
                ts = last.get("timestamp")
                rows.append(
                    {
                        "table": table,
                        "version": lake.version(table),
                        "last_write": dt.datetime.fromtimestamp(ts / 1000, dt.UTC) if ts else None,
                        "operation": last.get("operation"),
                    }
                )
            except Exception as exc:  # noqa: BLE001 - one broken table must not hide the others
                log.warning("could not read history of %s: %s", table, exc)
                rows.append({"table": table, "version": None, "last_write": None, "operation": f"error: {exc}"})
    return pd.DataFrame(rows)
