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
    marked = with_small(hashed, repeated.withColumn("_repeated", F.lit(True)), ["_key_hash"])
    many = marked.where(F.col("_repeated").isNotNull()).groupBy(*keys).agg(*aggregates)
    one = marked.where(F.col("_repeated").isNull()).select(*keys, *single)
    return many.unionByName(one)


def with_small(rows: DataFrame, small: DataFrame, on: Sequence[str]) -> DataFrame:
    """`rows.join(small, on, "left")` (rows' columns first), written so the engine hashes the small side.

    Sail ignores the broadcast hint and builds a join's hash table from its left input: a left join
    of wide rows to a small aggregate held every wide row in memory (the fair pool's 3 GB ran out at
    5M rows). The same join with the small side on the left, as a right join, hashes only the small
    side; Spark broadcasts it as well.
    """
    others = [c for c in small.columns if c not in on]
    return F.broadcast(small).join(rows, list(on), "right").select(*rows.columns, *others)
