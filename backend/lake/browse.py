"""The lake's face for the Gold tables page: a table's schema, partitions, history and rows (delta-rs; no engine)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from backend.lake.delta import Lake

PREVIEW_ROWS = 1000
DOWNLOAD_ROWS = 200_000  # a browser download, not an export tool: larger pulls belong to the CLI/lake


def schema_frame(lake: Lake, table: str) -> pd.DataFrame:
    dt_ = lake.table(table)
    schema = dt_.schema().to_arrow() if hasattr(dt_.schema(), "to_arrow") else dt_.schema().to_pyarrow()
    partitions = set(dt_.metadata().partition_columns)
    return pd.DataFrame(
        {
            "column": schema.names,
            "type": [str(t) for t in schema.types],
            "partition": [n in partitions for n in schema.names],
        }
    )


def partition_values(lake: Lake, table: str) -> tuple[str | None, list[str]]:
    """The first partition column and its values (e.g. charge_month), for a cheap partition-pruned preview."""
    dt_ = lake.table(table)
    cols = dt_.metadata().partition_columns
    if not cols:
        return None, []
    values = set()
    # deltalake 1.x hands back an arro3 table; pyarrow takes it through the Arrow C stream interface.
    for action in pa.table(dt_.get_add_actions(flatten=True)).to_pylist():
        value = action.get(f"partition.{cols[0]}")
        if value is not None:
            values.add(str(value))
    return cols[0], sorted(values, reverse=True)


def history_frame(lake: Lake, table: str, limit: int = 30) -> pd.DataFrame:
    rows = []
    for h in lake.history(table, limit):
        params = h.get("operationParameters") or {}
        ts = h.get("timestamp")
        rows.append(
            {
                "version": h.get("version"),
                "when": dt.datetime.fromtimestamp(ts / 1000, dt.UTC) if ts else None,
                "operation": h.get("operation"),
                "run_id": h.get("run_id") or h.get("userMetadata") or "",
                "parameters": ", ".join(f"{k}={v}" for k, v in params.items())[:200],
                "metrics": ", ".join(f"{k}={v}" for k, v in (h.get("operationMetrics") or {}).items())[:200],
            }
        )
    return pd.DataFrame(rows)


def rows(
    lake: Lake,
    table: str,
    *,
    partition: tuple[str, str] | None = None,
    column: str | None = None,
    contains: str = "",
    version: int | None = None,
    limit: int = DOWNLOAD_ROWS,
) -> tuple[pa.Table, int]:
    """Rows of the table (one partition when given), optionally where `column` contains `contains`.
    Returns (at most `limit` rows, number of matching rows)."""
    filters: Any = [(partition[0], "=", partition[1])] if partition else None
    data = lake.read_arrow(table, filters=filters, version=version)
    if column and contains:
        text = pc.cast(data[column], pa.string())
        data = data.filter(pc.fill_null(pc.match_substring(text, contains, ignore_case=True), False))
    return data.slice(0, limit), data.num_rows
