"""Tiny RawChunks for ingest tests: FOCUS-like Parquet slices, CSV and JSON pages with a row_count in meta."""

from __future__ import annotations

import io
import json
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from backend.sources.base import ContentType, PayloadFormat, RawChunk


def parquet_chunk(i: int, *, rows: int = 5, source: str = "test", account: str = "acct-1") -> RawChunk:
    day = date(2026, 1, 1) + timedelta(days=i % 28)
    table = pa.table(
        {
            "ChargePeriodStart": [day.isoformat()] * rows,
            "BilledCost": [f"{i}.{r:04d}" for r in range(rows)],
            "ResourceId": [f"/subscriptions/s/resourceGroups/rg/providers/x/r{i}-{r}" for r in range(rows)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return RawChunk(
        source=source,
        format=PayloadFormat.focus,
        content_type=ContentType.parquet,
        key=f"{account}|{day.isoformat()}",
        payload=buf.getvalue(),
        meta={"source": source, "chunk_index": str(i), "row_count": str(rows)},
    )


def csv_chunk(i: int, *, rows: int = 3, source: str = "test") -> RawChunk:
    lines = ["BilledCost,ResourceId"] + [f"{i}.{r},r{i}-{r}" for r in range(rows)]
    return RawChunk(
        source=source,
        format=PayloadFormat.focus,
        content_type=ContentType.csv,
        key=f"acct-2|2026-02-{1 + i % 28:02d}",
        payload=("\n".join(lines) + "\n").encode(),
        meta={"source": source, "row_count": str(rows)},
    )


def json_chunk(i: int, *, source: str = "test") -> RawChunk:
    page = {"properties": {"columns": [{"name": "Cost", "type": "Number"}], "rows": [[i]], "nextLink": None}}
    return RawChunk(
        source=source,
        format=PayloadFormat.azure_query,
        content_type=ContentType.json,
        key="sub-1",
        payload=json.dumps(page).encode(),
        meta={"source": source, "page": str(i), "row_count": "1"},
    )
