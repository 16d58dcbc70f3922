"""Bronze payloads -> staging rows: Parquet payloads are read by Spark itself from scratch files (typed columns kept), the rest decoded in Python workers."""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)
from pyspark.sql import types as T  # noqa: N812

from backend.medallion import silver
from backend.medallion.parse import (
    BRONZE_INPUT_COLUMNS,
    FORMAT_MAPS,
    LINEAGE_FIELDS,
    STAGING_FIELDS,
    chosen_columns,
    parse_meta,
)

log = logging.getLogger(__name__)

# Why: the Python decode hands Spark every value as an Arrow string, and turning ~1 GB of strings per
# million rows into Spark rows costs more than the decode itself (1M rows: 7.6 s of Python on one core,
# 20 s through mapInArrow on two). Spark's vectorised Parquet reader has no such bridge. Payload files
# Spark cannot read as they are (other formats, unreadable footers, nanosecond timestamps, exotic types)
# keep the Python path, which also turns undecodable payloads into quarantined failure rows.

LINEAGE_META = ("source_format", "source", "metric", "meta_subscription_id", "topic", "partition", "offset")
LINEAGE_META += ("batch_id", "bronze_run_id", "fetched_at")


# First code points of blank or "NULL" text: none (empty), \t \n \v \f \r, space, N, n.
_BLANK_OR_NULL_FIRST = (0, 9, 10, 11, 12, 13, 32, 78, 110)


def _spark_readable(data_type: pa.DataType) -> bool:
    """Types Spark's Parquet reader takes as written (nested ones become JSON text, as in parse._as_strings)."""
    if pa.types.is_dictionary(data_type):
        return _spark_readable(data_type.value_type)
    if pa.types.is_timestamp(data_type):
        return data_type.unit != "ns"  # Spark refuses TIMESTAMP(NANOS) without a legacy flag
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _spark_readable(data_type.value_type)
    if pa.types.is_map(data_type):
        return _spark_readable(data_type.key_type) and _spark_readable(data_type.item_type)
    if pa.types.is_struct(data_type):
        return all(_spark_readable(f.type) for f in data_type)
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_date32(data_type)
    )


def _native_schema(source_format: str, payload: bytes, content_type: str) -> pa.Schema | None:
    """The payload's Arrow schema when Spark can read it directly, else None (Python path)."""
    if source_format not in FORMAT_MAPS or source_format == "azure_query":
        return None
    if "parquet" not in (content_type or "") and payload[:4] != b"PAR1":
        return None
    try:
        schema = pq.ParquetFile(io.BytesIO(payload)).schema_arrow
    except (pa.ArrowException, OSError, ValueError):
        return None  # the Python path records why, as a quarantined failure row
    wanted = set(chosen_columns(schema.names, FORMAT_MAPS[source_format]).values())
    if len({n.lower() for n in schema.names}) != len(schema.names):
        return None  # Spark resolves names case-insensitively; let the Python path map them
    if not all(_spark_readable(schema.field(n).type) for n in wanted):
        return None
    return schema


def _as_staged(name: str, column: Column, data_type: T.DataType) -> Column:
    """parse._as_strings in Spark: values as text, nested values as JSON, blank or "NULL" text as null.

    Dates, money and a tag map validate reads typed (silver.keeps_type) stay as they are."""
    if silver.keeps_type(name, data_type):
        return column
    if isinstance(data_type, T.MapType | T.ArrayType | T.StructType):
        return F.to_json(column)
    if not isinstance(data_type, T.StringType):
        # A typed value is never blank text; skipping the checks saves a third of the staging time.
        return column.cast("string")
    blank = (F.btrim(column, F.lit(" \t\r\n\f\u000b")) == F.lit("")) | (
        (F.length(column) == 4) & (F.lower(column) == F.lit("null"))
    )
    # Blank text and "NULL" are empty or start with whitespace or n/N: testing the first character
    # before trimming skips the trim for nearly every value (the full test on every value was two
    # thirds of staging's CPU: 10 of 15 CPU-seconds per million rows).
    maybe_blank = F.ascii(column).isin(*_BLANK_OR_NULL_FIRST)
    return F.when(maybe_blank & blank, F.lit(None).cast("string")).otherwise(column)


def _group_frame(spark: SparkSession, source_format: str, files: list[str], lineage: DataFrame) -> DataFrame:
    """Payload files of one format and one layout -> staging rows."""
    schema = spark.read.parquet(files[0]).schema
    raw = spark.read.schema(schema).parquet(*files)
    by_name = {f.name: f for f in schema.fields}
    chosen = chosen_columns(list(by_name), FORMAT_MAPS[source_format])
    fields = [
        _as_staged(name, F.col(f"`{chosen[name]}`"), by_name[chosen[name]].dataType).alias(name)
        if name in chosen
        else F.lit(None).cast("string").alias(name)
        for name in STAGING_FIELDS
    ]
    rows = raw.select(
        *fields,
        F.col("_metadata.row_index").cast("long").alias("row_index"),
        F.col("_metadata.file_name").alias("_file"),
    )
    staged = rows.join(F.broadcast(lineage), "_file")
    return staged.select(
        *STAGING_FIELDS,
        *[
            F.lit(None).cast("string").alias(name) if name in ("parse_error", "raw_payload") else F.col(name)
            for name, _ in LINEAGE_FIELDS
        ],
    )


def validated(spark: SparkSession, bronze: pa.Table, scratch_dir: Path | None) -> DataFrame:
    """Bronze rows -> silver.validate's rows for every source row: each staged frame validated on its own
    column types, then one union (the validated columns are the same whatever the payload's types)."""
    frames = [silver.validate(frame) for frame in stage(spark, bronze, scratch_dir)]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def stage(spark: SparkSession, bronze: pa.Table, scratch_dir: Path | None) -> list[DataFrame]:
    """Bronze rows (BRONZE_INPUT_COLUMNS, payloads included) -> staging rows, one frame per payload layout.

    With `scratch_dir` (a folder the executors can read), Parquet payloads go there as files and Spark
    reads them; everything else, and everything when `scratch_dir` is None, takes the Python path
    (one all-text frame). Never an empty list.
    """
    bronze = bronze.select(BRONZE_INPUT_COLUMNS)
    groups: dict[tuple, list[int]] = defaultdict(list)
    python_rows: list[int] = []
    formats = bronze["format"].to_pylist()
    content_types = bronze["content_type"].to_pylist()
    payloads = bronze["payload"]
    for i, (source_format, content_type) in enumerate(zip(formats, content_types, strict=True)):
        schema = None
        if scratch_dir is not None:
            payload = payloads[i].as_py() or b""
            schema = _native_schema(source_format or "", payload, content_type or "")
        if schema is None:
            python_rows.append(i)
        else:
            layout = (source_format, tuple((f.name, str(f.type)) for f in schema))
            groups[layout].append(i)

    frames: list[DataFrame] = []
    if groups and scratch_dir is not None:  # (groups are only formed with a scratch folder)
        scratch_dir.mkdir(parents=True, exist_ok=True)
        meta_rows = []
        for indexes in groups.values():
            for i in indexes:
                (scratch_dir / f"{i}.parquet").write_bytes(payloads[i].as_py())
                meta_rows.append(_lineage_row(bronze, i))
        lineage = spark.createDataFrame(meta_rows, _lineage_spark_schema())
        for (source_format, _), indexes in groups.items():
            files = [str(scratch_dir / f"{i}.parquet") for i in indexes]
            frames.append(_group_frame(spark, source_format, files, lineage))
        log.info(
            "staging: %d payloads read by Spark in %d layouts, %d through the Python decoder",
            sum(len(v) for v in groups.values()),
            len(groups),
            len(python_rows),
        )
    if python_rows:
        # A few large messages would be one partition: spread them over the cores for the decode.
        python_frame = spark.createDataFrame(bronze.take(python_rows))
        python_frame = python_frame.repartition(max(2, spark.sparkContext.defaultParallelism * 2))
        frames.append(silver.explode(python_frame))
    return frames or [spark.createDataFrame([], silver.STAGING_SPARK_SCHEMA)]


def _lineage_spark_schema() -> T.StructType:
    from pyspark.sql.pandas.types import from_arrow_type

    fields = [T.StructField("_file", T.StringType(), False)]
    for name, kind in LINEAGE_FIELDS:
        if name in LINEAGE_META:
            fields.append(T.StructField(name, from_arrow_type(kind, prefer_timestamp_ntz=False), True))
    return T.StructType(fields)


def _lineage_row(bronze: pa.Table, i: int) -> tuple:
    row = {name: bronze[name][i].as_py() for name in BRONZE_INPUT_COLUMNS if name != "payload"}
    meta = parse_meta(row.get("meta"))
    values = {
        "source_format": row.get("format") or "",
        "source": row.get("source"),
        "metric": meta.get("metric"),
        "meta_subscription_id": meta.get("subscription_id") or None,
        "topic": row.get("topic"),
        "partition": row.get("partition"),
        "offset": row.get("offset"),
        "batch_id": row.get("batch_id"),
        "bronze_run_id": row.get("run_id"),
        "fetched_at": row.get("fetched_at"),
    }
    return (f"{i}.parquet", *[values[name] for name, _ in LINEAGE_FIELDS if name in LINEAGE_META])
