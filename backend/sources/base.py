"""The one interface between cost sources and ingest: sources yield RawChunks exactly as received, a ChunkSink carries them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class PayloadFormat(StrEnum):
    """How silver must read a chunk's payload. One silver mapping per format."""

    azure_query = "azure_query"  # one Cost Management Query API response page, JSON bytes as received
    azure_cost_details = "azure_cost_details"  # CSV bytes from a Cost Details report blob (header + rows)
    azure_export_ea = "azure_export_ea"  # CSV bytes of an EA cost export (actual or amortized)
    azure_export_mca = "azure_export_mca"  # CSV bytes of an MCA cost export (actual or amortized)
    focus = "focus"  # FOCUS 1.0-1.3 rows: CSV bytes, or Parquet bytes for Parquet files and the synthetic estate


class ContentType(StrEnum):
    json = "application/json"
    csv = "text/csv"
    parquet = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class RawChunk:
    """A slice of source data exactly as received, plus where it came from.

    - `payload` is never reshaped: an API page's JSON bytes, or CSV bytes (the header line repeated
      at the top of every chunk, rows byte-for-byte as in the file, BOM removed from the header only),
      or a Parquet file of a slice of rows for Parquet inputs / the synthetic estate.
    - `key` is the Kafka message key: "<billing account or subscription>|<YYYY-MM-DD>" when the chunk
      holds a single charge day, else "<subscription>" — so one (account, day) stays in one partition.
    - `meta` holds strings only: at least `source` ("azure", "file", "synthetic"), and as relevant
      `subscription_id`, `metric` ("ActualCost" / "AmortizedCost" / "FocusCost"), `window_start`,
      `window_end` (ISO dates), `page` (0-based), `file_name`, `file_sha256`, `chunk_index`,
      `chunk_count`, `row_count`, `fetched_at` (ISO-8601 UTC).
    """

    source: str
    format: PayloadFormat
    content_type: ContentType
    key: str
    payload: bytes
    meta: dict[str, str] = field(default_factory=dict)


class ChunkSink(Protocol):
    """Where sources deliver chunks (the Kafka producer in production, a list in unit tests)."""

    def send(self, chunk: RawChunk) -> None: ...

    def flush(self) -> None:
        """Block until every chunk sent so far is durable in the sink (Kafka acks=all)."""


class CostSource(Protocol):
    """A source of cost chunks. `fetch` yields the chunks of one batch; the caller sends them, waits
    until bronze holds them, and only then calls `commit` so the cursor advances (no data loss when a
    broker forgets messages: the next run fetches the same days again)."""

    name: str

    def fetch(self, batch_id: str) -> Iterator[RawChunk]: ...

    def commit(self, batch_id: str) -> None: ...
