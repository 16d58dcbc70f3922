"""Re-importing files safely: same content is skipped with a message, the inbox moves a file only once bronze holds it."""

from __future__ import annotations

import gzip
import json
import uuid
from decimal import Decimal

import sqlalchemy as sa

from backend.mart.cursors import PostgresCursorStore
from backend.mart.db import owner_engine
from backend.sources.cursors import MemoryCursorStore
from backend.sources.files import FileSource, scan_inbox
from tests.conftest import make_settings
from tests.sources.test_files import (
    EA_COLUMNS,
    FOCUS_COLUMNS,
    ListSink,
    _csv,
    _ea_rows,
    _focus_rows,
    deliver_via_sink,
)

FOCUS = _csv(FOCUS_COLUMNS, _focus_rows())
FOCUS_TOTAL = Decimal("23.393466789013")


def _other_focus() -> bytes:
    rows = _focus_rows()
    rows[0] = {**rows[0], "BilledCost": "100.5"}
    return _csv(FOCUS_COLUMNS, rows)


def _import(settings, path, cursors, sink, batch_id):
    source = FileSource(settings, [path], cursors=cursors)
    deliver_via_sink(sink)(source, batch_id)
    return source


def test_identical_content_is_skipped_with_a_message_and_a_changed_file_of_the_same_name_is_imported(tmp_path):
    settings = make_settings(tmp_path)
    cursors, sink = MemoryCursorStore(), ListSink()
    first = tmp_path / "focus-2025-03.csv"
    first.write_bytes(FOCUS)
    _import(settings, first, cursors, sink, "b1")
    sent = len(sink.chunks)
    assert sent > 0 and cursors.imported_file(_sha(sink, "focus-2025-03.csv")).batch_id == "b1"

    # The same content again: renamed, and gzip-compressed (the sha256 is of the content, not the bytes on disk).
    copy = tmp_path / "copy.csv.gz"
    copy.write_bytes(gzip.compress(FOCUS))
    again = _import(settings, copy, cursors, sink, "b2")
    assert len(sink.chunks) == sent  # nothing sent
    assert again.prepared == [] and len(again.skipped) == 1
    message = again.skipped[0].message
    assert "copy.csv.gz" in message and "focus-2025-03.csv" in message and "batch b1" in message
    assert "skipped, nothing imported again" in message and str(FOCUS_TOTAL) in message
    assert sum(r.reported_total for r in cursors.rows("file")) == FOCUS_TOTAL

    # A different file under the first one's name is new data: imported normally.
    first.write_bytes(_other_focus())
    changed = _import(settings, first, cursors, sink, "b3")
    assert changed.skipped == [] and len(sink.chunks) > sent
    assert {c.meta["batch_id"] for c in sink.chunks[sent:]} == {"b3"}


def _sha(sink: ListSink, name: str) -> str:
    return next(c.meta["file_sha256"] for c in sink.chunks if c.meta["file_name"] == name)


def test_the_same_content_twice_in_one_import_is_sent_once(tmp_path):
    settings = make_settings(tmp_path)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(FOCUS)
    b.write_bytes(FOCUS)
    cursors, sink = MemoryCursorStore(), ListSink()
    _import(settings, a, cursors, sink, "warm")
    sink.chunks.clear()
    a.write_bytes(_other_focus())
    source = FileSource(settings, [a, b, tmp_path / "b.csv"], cursors=cursors)
    chunks = list(source.fetch("b1"))
    assert {c.meta["file_name"] for c in chunks} == {"a.csv"}
    assert [s.path.name for s in source.skipped] == ["b.csv", "b.csv"]
    assert "batch warm" in source.skipped[0].message


def _pending_deliver(sink: ListSink, sent: list):
    """Like the pipeline: send and flush now, commit later (once bronze holds the batch)."""

    def deliver(source: FileSource, batch_id: str) -> None:
        for chunk in source.fetch(batch_id):
            sink.send(chunk)
        sink.flush()
        sent.append((source, batch_id))

    return deliver


def test_inbox_moves_a_file_to_processed_only_after_its_batch_is_committed(tmp_path):
    settings = make_settings(tmp_path)
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True)
    (inbox / "focus.csv").write_bytes(FOCUS)
    cursors, sink, sent = MemoryCursorStore(), ListSink(), []

    results = scan_inbox(settings, deliver=_pending_deliver(sink, sent), cursors=cursors)
    assert [(r.file_name, r.status, r.moved_to) for r in results] == [("focus.csv", "sent", None)]
    assert "once bronze holds its rows" in results[0].detail
    assert (inbox / "focus.csv").exists() and not (inbox / "processed").exists()

    # The batch never reached bronze (a broker that forgot it): nothing committed, so the next scan sends it again.
    lost = len(sink.chunks)
    sent.clear()
    results = scan_inbox(settings, deliver=_pending_deliver(sink, sent), cursors=cursors)
    assert results[0].status == "sent" and len(sink.chunks) == 2 * lost

    source, batch_id = sent[0]
    source.commit(batch_id)  # bronze holds it now
    assert not (inbox / "focus.csv").exists() and (inbox / "processed" / "focus.csv").exists()
    assert results[0].status == "imported" and results[0].moved_to == inbox / "processed" / "focus.csv"


def test_inbox_sets_aside_a_re_dropped_file_and_a_second_copy_in_the_same_scan(tmp_path):
    settings = make_settings(tmp_path)
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True)
    (inbox / "a.csv").write_bytes(FOCUS)
    (inbox / "b-same-as-a.csv").write_bytes(FOCUS)
    cursors, sink = MemoryCursorStore(), ListSink()
    results = scan_inbox(settings, deliver=deliver_via_sink(sink), cursors=cursors)
    assert [(r.file_name, r.status) for r in results] == [("a.csv", "imported"), ("b-same-as-a.csv", "skipped")]
    reason = (inbox / "rejected" / "b-same-as-a.csv.error.txt").read_text()
    assert "same content" in reason and "a.csv" in reason
    sent = len(sink.chunks)

    # Dropped again later under its own name: recognised, set aside with the earlier import named, nothing sent.
    (inbox / "a.csv").write_bytes(FOCUS)
    results = scan_inbox(settings, deliver=deliver_via_sink(sink), cursors=cursors)
    assert [r.status for r in results] == ["skipped"] and len(sink.chunks) == sent
    reasons = sorted((inbox / "rejected").glob("a*.error.txt"))
    assert len(reasons) == 1 and "skipped, nothing imported again" in reasons[0].read_text()
    assert (inbox / "processed" / "a.csv").exists()  # the first import is left as it was
    assert sum(r.reported_total for r in cursors.rows("file")) == FOCUS_TOTAL


def test_a_bad_file_touches_nothing_already_loaded(tmp_path):
    settings = make_settings(tmp_path)
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True)
    (inbox / "good.csv").write_bytes(FOCUS)
    cursors, sink = MemoryCursorStore(), ListSink()
    scan_inbox(settings, deliver=deliver_via_sink(sink), cursors=cursors)
    before = (list(sink.chunks), cursors.rows("file"))

    # A damaged re-export under the good file's name, and an empty file.
    (inbox / "good.csv").write_bytes(b"BilledCost,Whatever\n1,2\n")
    (inbox / "empty.csv").write_bytes(b"")
    results = scan_inbox(settings, deliver=deliver_via_sink(sink), cursors=cursors)
    assert {r.file_name: r.status for r in results} == {"empty.csv": "refused", "good.csv": "refused"}
    assert (list(sink.chunks), cursors.rows("file")) == before
    assert (inbox / "processed" / "good.csv").read_bytes() == FOCUS
    assert (inbox / "rejected" / "good.csv.error.txt").read_text().strip()
    assert not list(inbox.glob("*.csv"))


def test_postgres_store_records_files_on_commit_even_after_the_handshake_rewrites_the_batch(pg_url, tmp_path):
    from backend.mart.migrate import upgrade

    upgrade(pg_url)
    engine = owner_engine(pg_url)
    store = PostgresCursorStore(engine)
    try:
        path = tmp_path / "ea.csv"
        path.write_bytes(_csv(EA_COLUMNS, _ea_rows("CostInBillingCurrency"), bom=True))
        source = FileSource(make_settings(tmp_path), [path], cursors=store)
        batch = f"file-{uuid.uuid4().hex[:8]}"
        chunks = list(source.fetch(batch))
        sha = chunks[0].meta["file_sha256"]
        # What backend.ingest.handshake.send_batch does once Kafka acknowledged the batch: its own detail.
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE ops.source_batches SET detail = CAST(:d AS json) WHERE batch_id = :b"),
                {"b": batch, "d": json.dumps({"topic": "t", "cost_rows": 5})},
            )
        assert store.imported_file(sha) is None  # sent is not imported
        source.commit(batch)
        found = store.imported_file(sha)
        assert found is not None and (found.name, found.batch_id) == ("ea.csv", batch)
        assert found.total == source.prepared[0].total_cost and found.imported_at is not None
        with engine.connect() as conn:
            detail = conn.execute(
                sa.text("SELECT detail FROM ops.source_batches WHERE batch_id = :b"), {"b": batch}
            ).scalar_one()
        assert detail["topic"] == "t" and detail["imported_files"][0]["sha256"] == sha
        assert store.delivered_scopes("file") == {c.meta["scope"] for c in chunks}
        # A new store (another process, a later run) knows it too.
        other_engine = owner_engine(pg_url)
        try:
            again = FileSource(make_settings(tmp_path), [path], cursors=PostgresCursorStore(other_engine))
            assert list(again.fetch("later")) == [] and again.skipped[0].previous.batch_id == batch
        finally:
            other_engine.dispose()
    finally:
        engine.dispose()
