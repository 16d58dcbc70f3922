"""Spark frame helpers shared by silver and gold."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)


def aggregate_repeated(
    rows: DataFrame, keys: Sequence[str], aggregates: Sequence[Column], single: Sequence[Column]
) -> DataFrame:
    """`rows.groupBy(keys).agg(aggregates)`, with only the keys that have several rows aggregated.

    Cost exports have almost one row per key, and grouping every wide row on many string keys is the
    most expensive thing silver and gold do (a sort, when an aggregate such as min_by over a struct
    holding a map cannot hash). A narrow hash aggregate over a 64-bit hash of the key finds the keys
    with several rows; only their rows are aggregated, and every other row becomes `single`: the
    aggregates' columns computed from that one row, named as they are. A hash collision only sends
    rows through the aggregate, which is exact either way.
    """
    hashed = rows.withColumn("_key_hash", F.xxhash64(*keys))
    repeated = hashed.groupBy("_key_hash").count().where("count > 1").select("_key_hash")
    if repeated.isEmpty():
        # The usual case (one row per key): a narrow scan of the keys proves it, and the joins of the
        # wide rows against the repeated keys (half the transform's time) are skipped.
        return rows.select(*keys, *single)
    many = hashed.join(repeated, "_key_hash", "left_semi").groupBy(*keys).agg(*aggregates)
    one = hashed.join(repeated, "_key_hash", "left_anti").select(*keys, *single)
    return many.unionByName(one)
