"""Every Postgres advisory lock Costlake takes: one key registry, so two purposes can never share a key."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

# Session locks (held across transactions) and transaction locks share Postgres's one key space.
MIGRATE = 727000001  # alembic: two processes starting together never migrate concurrently
LOAD = 727000002  # one mart load at a time (transaction lock)
STARTUP = 727000003  # the scheduler's job table creation and default-job seeding are check-then-act
PIPELINE = zlib.crc32(b"costlake:pipeline")  # one pipeline run at a time, across processes
ALLOCATION = zlib.crc32(b"costlake:allocation")  # allocation rules and their results change together
ANOMALY_DIGEST = zlib.crc32(b"costlake:anomaly-digest")  # one digest at a time, runs or CLI tools


def try_lock(conn: sa.Connection, key: int) -> bool:
    """Take the session lock `key` without waiting; False when another session holds it."""
    got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
    conn.commit()
    return got


def unlock(conn: sa.Connection, key: int) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    conn.commit()


@contextmanager
def held(conn: sa.Connection, key: int) -> Iterator[None]:
    """Wait for the session lock `key` and hold it for the block."""
    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
    try:
        yield
    finally:
        unlock(conn, key)


def in_transaction(conn: sa.Connection, key: int) -> None:
    """Wait for the transaction lock `key`; Postgres releases it at the transaction's end."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
