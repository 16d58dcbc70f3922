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
