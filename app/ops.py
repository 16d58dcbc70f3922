"""Pipeline-page helpers: ingest details of a run, Kafka lag and drains, lake freshness (backend functions)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from backend.ingest.monitor import PartitionLag

log = logging.getLogger(__name__)


def kafka_lag(pipeline) -> pd.DataFrame:
    """Per topic partition: end offset, the group's committed offset, what bronze holds, and the lag."""
    from kafka.errors import KafkaError

    from backend.ingest.monitor import consumer_lag

    try:
        rows = consumer_lag(pipeline.settings, pipeline.lake, probe=True)  # resolved: the broker's address
    except KafkaError as exc:
        # Before the first ingest the topic does not exist (UNKNOWN_TOPIC_OR_PARTITION = 3): nothing lags yet.
        if "error code 3" in str(exc):
            return pd.DataFrame(columns=[f.name for f in fields(PartitionLag)])
        raise
    return pd.DataFrame([asdict(r) for r in rows])


def drains(lake, *, limit: int = 20) -> pd.DataFrame:
    """The latest Kafka -> bronze drains (from bronze's commit metadata) with their throughput."""
    from backend.ingest.monitor import drain_history

    rows = [
        {**asdict(d), "seconds": round(d.seconds, 1), "cost_rows_per_s": round(d.cost_rows_per_s)}
        for d in drain_history(lake)[:limit]
    ]
    return pd.DataFrame(rows)


@dataclass
class IngestDetails:
    """What one run's ingest and bronze steps recorded: batches sent and their fate, dead letters, inbox files."""

    batches: pd.DataFrame  # source, batch, chunks, state (committed / not in bronze / sent)
    inbox: pd.DataFrame  # file, status, detail
    dead_letters: int | None
    bronze_rows: int | None
    skipped_replays: int | None

    @property
    def not_in_bronze(self) -> int:
        return int((self.batches["state"] == "not in bronze").sum()) if not self.batches.empty else 0


def _detail(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def ingest_details(steps: pd.DataFrame) -> IngestDetails | None:
    """From a run's step rows (detail JSON of ingest and bronze); None when the run had no ingest step."""
    if steps is None or steps.empty or "ingest" not in set(steps["step"]):
        return None
    by_step = {row["step"]: _detail(row["detail"]) for _, row in steps.iterrows()}
    ingest, bronze = by_step.get("ingest", {}), by_step.get("bronze", {})
    committed = list(bronze.get("committed_batches") or [])
    missing = list(bronze.get("batches_not_in_bronze") or [])
    rows = [
        {"source": b.get("source"), "batch": b.get("batch"), "chunks": b.get("chunks")}
        for b in ingest.get("batches") or []
    ]
    known = {r["batch"] for r in rows}
    # Inbox files are sent one batch each and listed by file in the ingest detail, by batch in bronze's.
    rows += [{"source": "inbox", "batch": b, "chunks": None} for b in committed + missing if b not in known]
    for r in rows:
        r["state"] = "committed" if r["batch"] in committed else "not in bronze" if r["batch"] in missing else "sent"
    batches = pd.DataFrame(rows, columns=["source", "batch", "chunks", "state"])
    inbox = pd.DataFrame(list(ingest.get("inbox") or []), columns=["file", "status", "detail"])

    def count(name: str) -> int | None:
        return int(bronze[name]) if bronze.get(name) is not None else None

    return IngestDetails(batches, inbox, count("dead_letters"), count("bronze_rows"), count("skipped_replays"))


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
