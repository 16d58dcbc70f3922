"""The COPY encoder: binary rows round-trip exactly through Postgres; what binary cannot carry goes as CSV."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from backend.lake.catalog import MONEY
from backend.mart.db import owner_engine
from backend.mart.load import _binary_compatible, _copy_arrow

VALUES = [
    Decimal("0"),
    Decimal("-0.000000000001"),
    Decimal("1234567.890123456789"),
    Decimal("-9000000.5"),
    Decimal("42"),
]


def _table(money: list, *, converted: list | None = None) -> pa.Table:
    n = len(money)
    return pa.table(
        {
            "d": pa.array(
                [
                    dt.date(1999, 12, 31),
                    dt.date(2000, 1, 1),
                    dt.date(2026, 2, 28),
                    dt.date(1970, 1, 1),
                    dt.date(2099, 1, 1),
                ][:n],
                pa.date32(),
            ),
            "k": pa.array(range(-2, n - 2), pa.int32()),
            "big": pa.array([2**40 + i for i in range(n)], pa.int64()),
            "m": pa.array(money, MONEY),
            "c": pa.array(converted if converted is not None else [None] * n, MONEY),
        }
    )


def _roundtrip(url: str, table: pa.Table) -> list[tuple]:
    engine = owner_engine(url, poolclass=sa.pool.NullPool)
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cur:
            cur.execute("CREATE TEMP TABLE t (d date, k integer, big bigint, m numeric(28,12), c numeric(28,12))")
            _copy_arrow(cur, table, "t")
            cur.execute("SELECT d, k, big, m, c FROM t ORDER BY k")
            return cur.fetchall()
    finally:
        raw.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("money", "converted", "binary"),
    [
        (VALUES, None, True),  # all-null column: still binary
        (VALUES, VALUES, True),
        (VALUES, [None, Decimal(1), None, None, None], False),  # some nulls: CSV
        ([Decimal("123456789012345.5"), *VALUES[1:]], None, False),  # beyond int64 unscaled: CSV
    ],
)
def test_copy_round_trips_exactly(pg_url, money, converted, binary):
    table = _table(money, converted=converted)
    assert _binary_compatible(table) is binary
    rows = _roundtrip(pg_url, table)
    assert rows == list(zip(*[c.to_pylist() for c in table.columns], strict=True))


def test_an_encoding_error_aborts_the_copy(pg_url, monkeypatch):
    from backend.mart import load

    def broken(table):
        raise RuntimeError("encoder failed (injected)")

    monkeypatch.setattr(load, "_binary_rows", broken)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        with dbapi.cursor() as cur:
            cur.execute("CREATE TABLE copy_abort (d date, k integer, big bigint, m numeric(28,12), c numeric(28,12))")
            dbapi.commit()
            with pytest.raises(RuntimeError, match="injected"):
                _copy_arrow(cur, _table(VALUES), "copy_abort")
            dbapi.rollback()
            cur.execute("SELECT count(*) FROM copy_abort")
            assert cur.fetchone()[0] == 0
            cur.execute("DROP TABLE copy_abort")
            dbapi.commit()
    finally:
        raw.close()
        engine.dispose()
