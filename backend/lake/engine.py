"""Delta tables read and written by the Spark engine (Sail, a Spark Connect cluster or JVM Spark): no rows go through the driver."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)
from pyspark.sql import types as T  # noqa: N812
from pyspark.sql.pandas.types import from_arrow_schema

from backend.lake.delta import Lake

log = logging.getLogger(__name__)

# Intermediate results a job reads several times live here, under the lake root, so every engine
# (an in-process Sail, a cluster's executors) can reach them. Sail has no DataFrame cache: `persist`
# recomputes the plan on every action (measured with a sleeping UDF), so a result used three times
# is written once by the engine and read back.
SCRATCH_PREFIX = "_scratch"


def sql_list(values: Iterable[Any]) -> str:
    """A SQL IN-list of string literals (quotes doubled)."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def conform(frame: DataFrame, schema: pa.Schema) -> DataFrame:
    """Columns in the contract's order and types (a table's schema is the Arrow contract, whatever the engine)."""
    fields = from_arrow_schema(schema).fields
    return frame.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in fields])


def empty_frame(spark: SparkSession, schema: pa.Schema) -> DataFrame:
    return spark.createDataFrame([], from_arrow_schema(schema))


def ensure_table(lake: Lake, table: str, schema: pa.Schema, partition_by: Sequence[str] | None = None) -> None:
    """Create an empty table with the contract's schema (every column nullable) before the engine's first write.

    An engine infers nullability from the plan (a literal column is NOT NULL), and a table created by
    such a write would refuse a later null; creating it from the contract keeps the schema stable.
    """
    if not lake.exists(table):
        lake.append(table, schema.empty_table(), partition_by=partition_by)
        return
    _add_missing_columns(lake, table, schema)


def _add_missing_columns(lake: Lake, table: str, schema: pa.Schema) -> None:
    """Columns the contract gained since the table was created are added (null in existing rows).

    Only additions, at the end (where the contract puts new columns): a lake written by an earlier
    version keeps working without a rebuild. A changed type or a dropped column is not evolved here.
    """
    from deltalake import Field

    delta_table = lake.table(table)
    present = {f.name for f in delta_table.schema().fields}
    missing = [f for f in schema if f.name not in present]
    if missing:
        delta_table.alter.add_columns([Field.from_arrow(f) for f in missing])
        log.info("%s: added column(s) %s of the current contract", table, ", ".join(f.name for f in missing))


def read(spark: SparkSession, lake: Lake, table: str, schema: pa.Schema, *, where: str | None = None) -> DataFrame:
    """The table as the engine reads it (partition pruning from `where`), in the contract's columns; empty when absent."""
    if not lake.exists(table):
        return empty_frame(spark, schema)
    frame = spark.read.format("delta").load(lake.uri(table))
    if where:
        frame = frame.where(where)
    # A table written before the contract gained a column (they are only added, at the end) lacks it until
    # the next write's ensure_table adds it: read it as the null that step adds, so an increment that reads
    # stored rows before writing (gold reads the month before) works on an older lake.
    present = set(frame.columns)
    types = {f.name: f.dataType for f in from_arrow_schema(schema).fields}
    return frame.select(
        *[F.col(f"`{n}`") if n in present else F.lit(None).cast(types[n]).alias(n) for n in schema.names]
    )


def read_files(spark: SparkSession, uris: Sequence[str], schema: pa.Schema) -> DataFrame:
    """Given data files of a table (e.g. those a newer version added), read by the engine; partition columns excluded."""
    if not uris:
        return empty_frame(spark, schema)
    return spark.read.schema(from_arrow_schema(schema)).parquet(*uris)


def append(
    frame: DataFrame, lake: Lake, table: str, schema: pa.Schema, partition_by: Sequence[str] | None = None
) -> None:
    """Append rows (the engine writes the files and commits)."""
    ensure_table(lake, table, schema, partition_by)
    writer = conform(frame, schema).write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(lake.uri(table))


def replace(
    frame: DataFrame,
    lake: Lake,
    table: str,
    schema: pa.Schema,
    *,
    partition_by: Sequence[str] | None = None,
    values: Sequence[str] | None = None,
    where: str | None = None,
) -> int:
    """Replace exactly the partitions `partition_by[0] IN values` with `frame` in one commit (the whole table when None).

    `where` instead replaces the rows matching a predicate, which may name data columns (e.g. some charge
    days of a month): the engine rewrites only the files holding such rows, so rows of a day no file holds
    yet are a plain append. Every row of `frame` must match it. Returns the rows written, from the commit's
    metrics (no second pass over the frame); they include the rows a rewritten file carried over."""
    ensure_table(lake, table, schema, partition_by)
    writer = conform(frame, schema).write.format("delta").mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if where is not None and values is not None:
        raise ValueError(f"{table}: pass partition values or a predicate, not both")
    if values is not None:
        if not partition_by:
            raise ValueError(f"{table}: replacing partitions needs a partition column")
        if not values:
            return 0
        where = f"`{partition_by[0]}` IN ({sql_list(values)})"
    if where is not None:
        writer = writer.option("replaceWhere", where)
    writer.save(lake.uri(table))
    return _last_metrics(lake, table, "WRITE").get("numOutputRows", 0)


def _last_metrics(lake: Lake, table: str, operation: str) -> dict[str, Any]:
    # Engines answer DML with their own row (Sail: a count that is 0 for a DELETE); the Delta log's
    # operation metrics are the same on every engine.
    entry = lake.history(table, 1)[0]
    if entry.get("operation") != operation:
        return {}
    return {k: int(v) for k, v in (entry.get("operationMetrics") or {}).items() if str(v).lstrip("-").isdigit()}


def merge(
    spark: SparkSession,
    lake: Lake,
    table: str,
    source: DataFrame,
    *,
    keys: Sequence[str],
    update_columns: Sequence[str] | None = None,
    target_predicate: str = "",
) -> dict[str, Any]:
    """MERGE `source` into the table on null-safe `keys`: matches update (`update_columns`, or all), the rest insert.

    `target_predicate` (on `t.`) prunes the target's partitions. Returns the commit's operation metrics.
    """
    view = f"merge_source_{uuid.uuid4().hex[:12]}"
    source.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if target_predicate:
        on = f"{on} AND ({target_predicate})"
    columns = source.columns if update_columns is None else update_columns
    update = ", ".join(f"t.`{c}` = s.`{c}`" for c in columns)
    names = ", ".join(f"`{c}`" for c in source.columns)
    values = ", ".join(f"s.`{c}`" for c in source.columns)
    try:
        spark.sql(
            f"MERGE INTO delta.`{lake.uri(table)}` AS t USING {view} AS s ON {on} "
            f"WHEN MATCHED THEN UPDATE SET {update} WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
        ).collect()
    finally:
        spark.catalog.dropTempView(view)
    return _last_metrics(lake, table, "MERGE")


def delete_in(
    spark: SparkSession,
    lake: Lake,
    table: str,
    column: str,
    values: Sequence[str],
    *,
    where: str,
    target_predicate: str = "",
) -> int:
    """DELETE the rows whose `column` is one of `values` and that match `where`; returns how many went.

    Written as a MERGE against the values (a join) rather than a DELETE with an IN list: Sail 0.7.2's
    DELETE slows with the square of a long list (1,472 slices: 31 s against 0.3 s this way) and rewrites
    every file it scans even when nothing matches. `target_predicate` (on `t.`) prunes partitions.
    """
    if not values:
        return 0
    view = f"delete_keys_{uuid.uuid4().hex[:12]}"
    key = "__delete_key"
    spark.createDataFrame([(v,) for v in sorted(set(values))], f"{key} string").createOrReplaceTempView(view)
    on = f"t.`{column}` = s.`{key}`" + (f" AND ({target_predicate})" if target_predicate else "")
    version = lake.version(table)
    try:
        spark.sql(
            f"MERGE INTO delta.`{lake.uri(table)}` AS t USING {view} AS s ON {on} WHEN MATCHED AND ({where}) THEN DELETE"
        ).collect()
    finally:
        spark.catalog.dropTempView(view)
    if lake.version(table) == version:
        return 0
    return _last_metrics(lake, table, "MERGE").get("numTargetRowsDeleted", 0)


def update(spark: SparkSession, lake: Lake, table: str, assignments: dict[str, str], predicate: str) -> int:
    """UPDATE the rows matching `predicate`; returns how many changed."""
    version = lake.version(table)
    sets = ", ".join(f"`{c}` = {v}" for c, v in assignments.items())
    spark.sql(f"UPDATE delta.`{lake.uri(table)}` SET {sets} WHERE {predicate}").collect()
    if lake.version(table) == version:
        return 0
    return _last_metrics(lake, table, "UPDATE").get("numUpdatedRows", 0)


class Scratch:
    """Intermediate results written once by the engine as Parquet under the lake and read back; removed on exit."""

    def __init__(self, spark: SparkSession, lake: Lake, run_id: str) -> None:
        self.spark = spark
        self.lake = lake
        self.root = lake.location.join(SCRATCH_PREFIX, f"{run_id}-{uuid.uuid4().hex[:8]}")

    def keep(self, frame: DataFrame, name: str) -> DataFrame:
        path = f"{self.root}/{name}"
        frame.write.mode("overwrite").parquet(path)
        # The frame's own schema (an empty result may leave no file to infer one from), every level
        # nullable: the files' physical schema is, and Sail refuses to read nullable data as NOT NULL.
        return self.spark.read.schema(_nullable(frame.schema)).parquet(path)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *_exc) -> None:
        remove_tree(self.lake, self.root)


def _nullable(data_type: T.DataType) -> T.DataType:
    if isinstance(data_type, T.StructType):
        return T.StructType([T.StructField(f.name, _nullable(f.dataType), True) for f in data_type.fields])
    if isinstance(data_type, T.ArrayType):
        return T.ArrayType(_nullable(data_type.elementType), True)
    if isinstance(data_type, T.MapType):
        return T.MapType(_nullable(data_type.keyType), _nullable(data_type.valueType), True)
    return data_type


def remove_tree(lake: Lake, uri: str) -> None:
    """Delete a scratch folder (local or S3); a leftover of a killed run is swept by `sweep_scratch`."""
    if not lake.location.is_s3:
        shutil.rmtree(uri, ignore_errors=True)
        return
    from backend.lake.storage import minio_client

    client = minio_client(lake.location)
    prefix = uri.split(f"s3://{lake.location.bucket}/", 1)[1].rstrip("/") + "/"
    for obj in client.list_objects(lake.location.bucket, prefix, recursive=True):
        client.remove_object(lake.location.bucket, obj.object_name)


def sweep_scratch(lake: Lake) -> None:
    """Remove every scratch folder: runs are serialised by the pipeline lock, so any found before a run is a dead run's."""
    remove_tree(lake, lake.location.join(SCRATCH_PREFIX))
