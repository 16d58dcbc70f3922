"""The envelope round-trips a chunk untouched, and names what is wrong with a bad message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.ingest import envelope
from backend.ingest.envelope import InvalidMessageError, OversizedChunkError
from tests.ingest.chunks import csv_chunk, json_chunk, parquet_chunk

SENT_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _encoded(chunk=None):
    return envelope.encode(chunk or parquet_chunk(1), batch_id="b-1", sent_at=SENT_AT)


@pytest.mark.parametrize("make", [parquet_chunk, csv_chunk, json_chunk])
def test_round_trip_keeps_payload_bytes_exactly(make):
    chunk = make(3)
    key, value, headers = _encoded(chunk)
    assert value is chunk.payload  # no copy, no re-encoding
    env = envelope.decode(key, value, headers)
    assert env.payload == chunk.payload
    assert (env.source, env.format, env.content_type, env.key) == (
        chunk.source,
        chunk.format,
        chunk.content_type,
        chunk.key,
    )
    assert env.batch_id == "b-1" and env.schema_version == envelope.SCHEMA_VERSION
    assert env.fetched_at == SENT_AT


def test_fetched_at_from_meta_wins():
    chunk = parquet_chunk(1)
    chunk.meta["fetched_at"] = "2026-02-27T08:30:00+00:00"
    env = envelope.decode(*_encoded(chunk))
    assert env.fetched_at == datetime(2026, 2, 27, 8, 30, tzinfo=UTC)


def _replace(headers, name, value):
    return [(n, value if n == name else v) for n, v in headers if value is not None or n != name]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda k, v, h: (k, v, []), "missing envelope headers"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_BATCH_ID, None)), "costlake.batch_id"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_VERSION, b"99")), "unsupported schema version 99"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_VERSION, b"x")), "not a number"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_FORMAT, b"xml")), "unknown payload format 'xml'"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_CONTENT_TYPE, b"text/xml")), "unknown content type"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_META, b"{not json")), "meta header is not JSON"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_META, b'{"a": 1}')), "JSON object of strings"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_FETCHED_AT, b"2026-01-01T00:00")), "no time zone"),
        (lambda k, v, h: (k, v, _replace(h, envelope.H_SOURCE, b"\xff")), "not UTF-8"),
        (lambda k, v, h: (None, v, h), "no key"),
        (lambda k, v, h: (k, b"", h), "empty payload"),
        (lambda k, v, h: (k, v[:-10], h), "PAR1"),
        (lambda k, v, h: (k, v, h + [(envelope.H_SOURCE, b"again")]), "more than once"),
    ],
)
def test_invalid_messages_are_named(mutate, message):
    with pytest.raises(InvalidMessageError, match=message):
        envelope.decode(*mutate(*_encoded()))


def test_bad_json_and_csv_payloads():
    key, _, headers = _encoded(json_chunk(1))
    with pytest.raises(InvalidMessageError, match="does not parse"):
        envelope.decode(key, b'{"properties": [', headers)
    with pytest.raises(InvalidMessageError, match="not a JSON object"):
        envelope.decode(key, b"[1, 2]", headers)
    key, _, headers = _encoded(csv_chunk(1))
    with pytest.raises(InvalidMessageError, match="column separator"):
        envelope.decode(key, b"just one column\n1\n", headers)


def test_encode_refuses_bad_chunks():
    chunk = parquet_chunk(1)
    with pytest.raises(ValueError, match="batch id"):
        envelope.encode(chunk, batch_id="", sent_at=SENT_AT)
    chunk.meta["fetched_at"] = "yesterday"
    with pytest.raises(ValueError, match="ISO-8601"):
        envelope.encode(chunk, batch_id="b", sent_at=SENT_AT)


def test_oversized_chunk_error_names_the_limit():
    key, value, headers = _encoded()
    size = envelope.message_size(key, value, headers)
    assert size > len(value)
    envelope.check_size(size, limit=size, source="s", key="k")
    with pytest.raises(OversizedChunkError, match="KAFKA_MAX_MESSAGE_BYTES"):
        envelope.check_size(size, limit=size - 1, source="s", key="k")
