"""The versioned Kafka envelope: the value is the chunk's payload exactly as received, the envelope rides in headers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from backend.sources.base import ContentType, PayloadFormat, RawChunk

# Bump when a header is added with a new meaning or an existing one changes; decoders refuse versions
# they do not know (dead letter), so an old consumer never misreads a newer producer's messages.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

H_VERSION = "costlake.v"
H_SOURCE = "costlake.source"
H_FORMAT = "costlake.format"
H_CONTENT_TYPE = "costlake.content_type"
H_BATCH_ID = "costlake.batch_id"
H_FETCHED_AT = "costlake.fetched_at"
H_META = "costlake.meta"
REQUIRED_HEADERS = (H_VERSION, H_SOURCE, H_FORMAT, H_CONTENT_TYPE, H_BATCH_ID, H_FETCHED_AT, H_META)

# Fixed overhead per record batch and per record besides key, value and headers (Kafka v2 record format),
# rounded up so the size check errs on the safe side.
RECORD_OVERHEAD_BYTES = 128

_PARQUET_MAGIC = b"PAR1"
_FORMATS = frozenset(f.value for f in PayloadFormat)
_CONTENT_TYPES = frozenset(c.value for c in ContentType)


class InvalidMessageError(ValueError):
    """A Kafka message that is not a valid Costlake envelope; it goes to the dead-letter table."""


class OversizedChunkError(ValueError):
    """A chunk too large for one Kafka message; the source must cut smaller chunks."""


@dataclass(frozen=True)
class Envelope:
    """A decoded message: everything bronze stores besides Kafka's own coordinates."""

    schema_version: int
    source: str
    format: str
    content_type: str
    batch_id: str
    fetched_at: datetime
    meta_json: str
    key: str
    payload: bytes


def utc_now() -> datetime:
    return datetime.now(UTC)


def encode(chunk: RawChunk, *, batch_id: str, sent_at: datetime) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for one chunk. `fetched_at` comes from the chunk's meta when the source set it,
    else the send time (never later than the real fetch, never a made-up usage date)."""
    if not batch_id:
        raise ValueError("a chunk needs a batch id (open one with KafkaChunkSink.batch(batch_id))")
    if not chunk.key:
        raise ValueError(
            f"chunk from source {chunk.source!r} has an empty key; keys keep an (account, day) in one partition"
        )
    fetched_at = chunk.meta.get("fetched_at") or sent_at.astimezone(UTC).isoformat()
    # Validate now so a bad timestamp is the producer's error, not a dead letter later.
    _parse_utc(fetched_at)
    if any(not isinstance(v, str) for v in chunk.meta.values()):
        raise ValueError(f"RawChunk.meta values must be strings (source {chunk.source!r}, key {chunk.key!r})")
    headers = [
        (H_VERSION, str(SCHEMA_VERSION).encode()),
        (H_SOURCE, chunk.source.encode()),
        (H_FORMAT, str(chunk.format).encode()),
        (H_CONTENT_TYPE, str(chunk.content_type).encode()),
        (H_BATCH_ID, batch_id.encode()),
        (H_FETCHED_AT, fetched_at.encode()),
        (H_META, json.dumps(chunk.meta, separators=(",", ":"), sort_keys=True).encode()),
    ]
    return chunk.key.encode(), chunk.payload, headers


def message_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """Upper bound of one record's size on the wire before compression (what brokers' limits compare)."""
    return RECORD_OVERHEAD_BYTES + len(key) + len(value) + sum(len(k) + len(v) + 10 for k, v in headers)


def check_size(size: int, *, limit: int, source: str, key: str) -> None:
    if size > limit:
        raise OversizedChunkError(
            f"chunk from source {source!r} with key {key!r} is {size:,} bytes, over the Kafka message limit of "
            f"{limit:,} bytes (KAFKA_MAX_MESSAGE_BYTES); the source must cut smaller chunks"
        )


def decode(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None) -> Envelope:
    """Validate and decode one message; raises InvalidMessageError naming what is wrong."""
    found: dict[str, bytes] = {}
    for name, raw in headers or ():
        if name in found:
            raise InvalidMessageError(f"header {name!r} appears more than once")
        found[name] = raw if raw is not None else b""
    missing = [h for h in REQUIRED_HEADERS if h not in found]
    if missing:
        raise InvalidMessageError(f"missing envelope headers: {', '.join(missing)}")
    try:
        text = {name: found[name].decode("utf-8") for name in REQUIRED_HEADERS}
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(f"an envelope header is not UTF-8: {exc}") from None
    try:
        version = int(text[H_VERSION])
    except ValueError:
        raise InvalidMessageError(f"schema version {text[H_VERSION]!r} is not a number") from None
    if version not in SUPPORTED_VERSIONS:
        raise InvalidMessageError(
            f"unsupported schema version {version} (this consumer reads {sorted(SUPPORTED_VERSIONS)})"
        )
    if text[H_FORMAT] not in _FORMATS:
        raise InvalidMessageError(f"unknown payload format {text[H_FORMAT]!r}; expected one of {sorted(_FORMATS)}")
    if text[H_CONTENT_TYPE] not in _CONTENT_TYPES:
        raise InvalidMessageError(
            f"unknown content type {text[H_CONTENT_TYPE]!r}; expected one of {sorted(_CONTENT_TYPES)}"
        )
    for name in (H_SOURCE, H_BATCH_ID):
        if not text[name]:
            raise InvalidMessageError(f"header {name!r} is empty")
    if key is None or not key:
        raise InvalidMessageError("message has no key")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessageError("message key is not UTF-8") from None
    fetched_at = _parse_utc(text[H_FETCHED_AT], error=InvalidMessageError)
    try:
        meta = json.loads(text[H_META])
    except json.JSONDecodeError as exc:
        raise InvalidMessageError(f"meta header is not JSON: {exc}") from None
    if not isinstance(meta, dict) or any(not isinstance(v, str) for v in meta.values()):
        raise InvalidMessageError("meta header must be a JSON object of strings")
    if not value:
        raise InvalidMessageError("message has an empty payload")
    check_payload(value, text[H_CONTENT_TYPE])
    return Envelope(
        schema_version=version,
        source=text[H_SOURCE],
        format=text[H_FORMAT],
        content_type=text[H_CONTENT_TYPE],
        batch_id=text[H_BATCH_ID],
        fetched_at=fetched_at,
        meta_json=text[H_META],
        key=key_text,
        payload=value,
    )


def check_payload(payload: bytes, content_type: str) -> None:
    """Cheap structural checks that catch truncated or mislabelled payloads; parsing rows is silver's job."""
    if content_type == ContentType.parquet:
        if len(payload) < 12 or not payload.startswith(_PARQUET_MAGIC) or not payload.endswith(_PARQUET_MAGIC):
            raise InvalidMessageError("payload labelled Parquet lacks the PAR1 magic at both ends (truncated?)")
    elif content_type == ContentType.json:
        # An API page is a JSON object; parsing it costs ~1 ms per 100 kB, cheap next to a bad page in silver.
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidMessageError(f"payload labelled JSON does not parse: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidMessageError("payload labelled JSON is not a JSON object")
    elif content_type == ContentType.csv:
        header = payload.split(b"\n", 1)[0]
        try:
            header.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessageError("CSV payload's header line is not UTF-8") from None
        if b"," not in header and b";" not in header and b"\t" not in header:
            raise InvalidMessageError("CSV payload's first line has no column separator")


def _parse_utc(text: str, *, error: type[Exception] = ValueError) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise error(f"fetched_at {text!r} is not an ISO-8601 timestamp") from None
    if value.tzinfo is None:
        raise error(f"fetched_at {text!r} has no time zone; use UTC")
    return value.astimezone(UTC)
