"""The lake interface on a local folder and on a real S3 server: append, MERGE with null keys, replace_where, history."""

from __future__ import annotations

import pyarrow as pa
import pytest

from backend.lake import lake_from_settings
from backend.lake.storage import check_lake
from tests.conftest import make_settings


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    if request.param == "local":
        return lake_from_settings(make_settings(tmp_path))
    return lake_from_settings(request.getfixturevalue("s3_settings"))


def test_merge_is_idempotent_and_null_safe(lake):
    rows = pa.table({"k": ["a", None, "c"], "v": [1, 2, 3]})
    lake.merge("silver/t", rows, keys=["k"], run_id="r1")
    lake.merge("silver/t", rows, keys=["k"], run_id="r2")
    result = lake.read_arrow("silver/t").sort_by("v").to_pylist()
    assert result == [{"k": "a", "v": 1}, {"k": None, "v": 2}, {"k": "c", "v": 3}]
    lake.merge("silver/t", pa.table({"k": [None], "v": [20]}), keys=["k"], run_id="r3")
    assert sorted(lake.read_arrow("silver/t").column("v").to_pylist()) == [1, 3, 20]
    history = lake.history("silver/t")
    assert history[0]["costlake.run_id"] == "r3"


def test_merge_updates_only_named_columns(lake):
    lake.merge(
        "silver/m",
        pa.table(
            {"k": ["a"], "billed": [5], "effective": [None]},
            schema=pa.schema([("k", pa.string()), ("billed", pa.int64()), ("effective", pa.int64())]),
        ),
        keys=["k"],
    )
    update = pa.table(
        {"k": ["a"], "billed": [None], "effective": [7]},
        schema=pa.schema([("k", pa.string()), ("billed", pa.int64()), ("effective", pa.int64())]),
    )
    lake.merge("silver/m", update, keys=["k"], update_columns=["effective"])
    assert lake.read_arrow("silver/m").to_pylist() == [{"k": "a", "billed": 5, "effective": 7}]


def test_replace_where_touches_only_matching_rows(lake):
    first = pa.table({"day": ["d1", "d1", "d2"], "v": [1, 2, 3]})
    lake.replace_where("gold/g", first, predicate="day = 'd1'", partition_by=["day"])
    lake.replace_where("gold/g", pa.table({"day": ["d1"], "v": [10]}), predicate="day = 'd1'")
    assert sorted(lake.read_arrow("gold/g").column("v").to_pylist()) == [3, 10]
    assert lake.list_tables("gold") == ["gold/g"]


def test_app_transaction_is_recorded_with_append(lake):
    lake.append("bronze/b", pa.table({"x": [1]}), app_transaction=("topic-0", 41))
    assert lake.transaction_version("bronze/b", "topic-0") == 41
    assert lake.transaction_version("bronze/b", "topic-1") is None
    assert lake.transaction_version("bronze/none", "topic-0") is None


def test_health_check_round_trip(lake):
    assert check_lake(lake.location)


WRITE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("amount", pa.decimal128(28, 12)),
        ("at", pa.timestamp("us", tz="UTC")),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("month", pa.string()),
    ]
)


def _frame(spark, rows):
    from datetime import UTC, datetime
    from decimal import Decimal

    table = pa.Table.from_pylist(
        [
            {
                "key": k,
                "amount": Decimal(a),
                "at": datetime(2024, 1, 2, 3, tzinfo=UTC),
                "tags": [("env", k)],
                "month": m,
            }
            for k, a, m in rows
        ],
        schema=WRITE_SCHEMA,
    )
    return spark.createDataFrame(table)


@pytest.mark.slow
def test_write_frame_appends_and_replaces_partitions(lake, spark):
    """Executors' Parquet (local) or driver Arrow (S3) committed by delta-rs: same rows, types and semantics."""
    first = lake.write_frame(
        "gold/t",
        _frame(spark, [("a", "1.5", "2024-01"), ("b", "2", "2024-02")]),
        schema=WRITE_SCHEMA,
        partition_by=["month"],
        run_id="r1",
        app_transaction=("app", 3),
    )
    assert first.rows == 2 and sorted(p["month"] for p in first.partitions) == ["2024-01", "2024-02"]
    assert lake.transaction_version("gold/t", "app") == 3
    out = lake.read_arrow("gold/t")
    assert out.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert sorted(out.column("key").to_pylist()) == ["a", "b"]
    # Replace only January: February keeps its row, January's old row is gone.
    lake.write_frame(
        "gold/t",
        _frame(spark, [("c", "3", "2024-01")]),
        schema=WRITE_SCHEMA,
        mode="overwrite",
        partition_by=["month"],
        partition_filters=[("month", "in", ["2024-01"])],
        run_id="r2",
    )
    rows = {r["key"]: (str(r["amount"]), r["month"], dict(r["tags"])) for r in lake.read_arrow("gold/t").to_pylist()}
    assert rows == {"b": ("2.000000000000", "2024-02", {"env": "b"}), "c": ("3.000000000000", "2024-01", {"env": "c"})}
    assert lake.count("gold/t") == 2
    assert lake.history("gold/t")[0]["costlake.run_id"] == "r2"
    # A MERGE by delta-rs works on the files Spark wrote.
    lake.merge("gold/t", lake.read_arrow("gold/t").select(WRITE_SCHEMA.names), keys=["key"], run_id="r3")
    assert lake.count("gold/t") == 2
    if not lake.location.is_s3:
        root = lake.uri("gold/t")
        import os

        assert not [n for n in os.listdir(root) if n.startswith("_staging")]
    with pytest.raises(ValueError, match="filters"):
        lake.write_frame(
            "gold/t",
            _frame(spark, []),
            schema=WRITE_SCHEMA,
            mode="overwrite",
            partition_by=["month"],
            partition_filters=[("key", "in", ["a"])],
        )


def test_changed_partitions_sees_appends_replaced_and_emptied_months(lake):
    table = "gold/progress_probe"
    lake.append(table, pa.table({"m": ["2026-01", "2026-02"], "x": [1, 2]}), partition_by=["m"])
    v0 = lake.version(table)
    assert lake.changed_partitions(table, "m", since=v0) == set()

    lake.replace_where(table, pa.table({"m": ["2026-02"], "x": [3]}), predicate="m = '2026-02'")
    lake.append(table, pa.table({"m": ["2026-03"], "x": [4]}), partition_by=["m"])
    assert lake.changed_partitions(table, "m", since=v0) == {"2026-02", "2026-03"}

    v2 = lake.version(table)
    lake.delete(table, "m = '2026-01'")
    assert lake.changed_partitions(table, "m", since=v2) == {"2026-01"}
    # A mark from the future (the table was recreated) cannot be trusted: everything is changed.
    assert lake.changed_partitions(table, "m", since=v2 + 10) is None
