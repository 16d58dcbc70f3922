"""Delta table I/O through delta-rs: append, partition replace, MERGE, history — the only place that touches table files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from backend.config import Settings
from backend.lake.storage import LakeLocation, lake_location

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# Spark's name for a null partition value in a directory name.
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass
class FrameWrite:
    """What `Lake.write_frame` committed: rows, files and the partition values they landed in."""

    rows: int = 0
    files: int = 0
    partitions: list[dict[str, str | None]] = field(default_factory=list)


def _commit(run_id: str | None, operation: str, extra: dict[str, str] | None = None) -> CommitProperties:
    # Every commit says which pipeline run wrote it, so Delta history answers "what did run X change".
    metadata = {"costlake.operation": operation}
    if run_id:
        metadata["costlake.run_id"] = run_id
    if extra:
        metadata.update(extra)
    return CommitProperties(custom_metadata=metadata)


def _with_txn(
    props: CommitProperties, app_transaction: tuple[str, int] | None, *more: tuple[str, int]
) -> CommitProperties:
    """`props` plus app transactions (app_id, version), recorded atomically with the commit's data."""
    txns = ([app_transaction] if app_transaction is not None else []) + list(more)
    if not txns:
        return props
    from deltalake import Transaction

    return CommitProperties(
        custom_metadata=props.custom_metadata,
        app_transactions=[Transaction(app_id=app, version=version) for app, version in txns],
    )


class Lake:
    """Named Delta tables (e.g. "bronze/cost_records") under one lake root."""

    def __init__(self, location: LakeLocation) -> None:
        self.location = location

    # --- addressing ----------------------------------------------------------------
    def uri(self, table: str) -> str:
        return self.location.join(table)

    @property
    def storage_options(self) -> dict[str, str]:
        return self.location.storage_options

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options or None)

    def table(self, table: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.uri(table), version=version, storage_options=self.storage_options or None)

    def list_tables(self, layer: str) -> list[str]:
        """Tables of one layer ("bronze", "silver", "gold") that exist."""
        if self.location.is_s3:
            from backend.lake.storage import minio_client

            client = minio_client(self.location)
            prefix = "/".join(p for p in (self.location.prefix, layer) if p) + "/"
            names = sorted(
                {obj.object_name[len(prefix) :].strip("/") for obj in client.list_objects(self.location.bucket, prefix)}
            )
        else:
            from pathlib import Path

            root = Path(self.location.uri) / layer
            names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
        return [f"{layer}/{name}" for name in names if self.exists(f"{layer}/{name}")]

    # --- reads ---------------------------------------------------------------------
    def read_arrow(
        self,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        filters: Any = None,
        version: int | None = None,
    ) -> pa.Table:
        """The table (or a projection / filter of it) as Arrow; `filters` uses pyarrow DNF tuples."""
        dt = self.table(table, version=version)
        return dt.to_pyarrow_table(columns=list(columns) if columns else None, filters=filters)

    def file_uris(self, table: str, *, version: int | None = None, partition_filters: Any = None) -> list[str]:
        """Active data files (of `version`, optionally only partitions matching pyarrow-style filters)."""
        return self.table(table, version=version).file_uris(partition_filters=partition_filters)

    def read_files_arrow(self, table: str, uris: Sequence[str], *, columns: Sequence[str] | None = None) -> pa.Table:
        """Only the given data files of the table (e.g. the files a newer version added) as Arrow."""
        import pyarrow.dataset as ds

        wanted = {u.rstrip("/").rsplit("/", 1)[-1] for u in uris}
        dataset = self.table(table).to_pyarrow_dataset()
        fragments = [f for f in dataset.get_fragments() if f.path.rsplit("/", 1)[-1] in wanted]
        subset = ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
        return subset.to_table(columns=list(columns) if columns else None)

    def version(self, table: str) -> int | None:
        try:
            return self.table(table).version()
        except TableNotFoundError:
            return None

    def changed_partitions(self, table: str, column: str, *, since: int) -> set[str] | None:
        """Values of partition `column` whose files differ between version `since` and now (added or
        removed files: appends, merges, replaced months, deletes). None when `since` cannot be read
        (log cleaned up, table recreated with fewer versions): the caller must treat everything as changed."""
        current = self.table(table)
        if since > current.version():
            return None
        if since == current.version():
            return set()
        try:
            before = self.table(table, version=since)
        except Exception:  # noqa: BLE001  (delta-rs raises several types for an unreadable old version)
            log.warning("%s: version %s is no longer readable; treating every partition as changed", table, since)
            return None

        def files(dt: DeltaTable) -> dict[str, str | None]:
            adds = pa.table(dt.get_add_actions(flatten=True))
            if adds.num_rows == 0:
                return {}
            return dict(
                zip(adds.column("path").to_pylist(), adds.column(f"partition.{column}").to_pylist(), strict=True)
            )

        old, new = files(before), files(current)
        changed = {old[p] for p in old.keys() - new.keys()} | {new[p] for p in new.keys() - old.keys()}
        return {str(v) for v in changed if v is not None}

    def history(self, table: str, limit: int | None = 20) -> list[dict[str, Any]]:
        return self.table(table).history(limit)

    def count(self, table: str) -> int:
        return self.table(table).count() if self.exists(table) else 0

    # --- writes --------------------------------------------------------------------
    def _append_write(self, table: str, data: pa.Table, *, partition_by: Sequence[str] | None, props) -> None:
        """An append; also a table's first write, so a concurrent creator fails instead of overwriting."""
        write_deltalake(
            self.uri(table),
            data,
            mode="append",
            partition_by=list(partition_by) if partition_by else None,
            storage_options=self.storage_options or None,
            commit_properties=props,
        )

    def append(
        self,
        table: str,
        data: pa.Table,
        *,
        run_id: str | None = None,
        partition_by: Sequence[str] | None = None,
        app_transaction: tuple[str, int] | None = None,
        app_transactions: Sequence[tuple[str, int]] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Append rows (bronze semantics). `app_transaction` records (app_id, version) atomically with the
        data, so a writer can tell after a crash which batch already landed; `app_transactions` records
        several in the same commit (e.g. one per Kafka partition). `metadata` adds string entries to the
        commit's custom metadata (visible in `history`)."""
        props = _with_txn(_commit(run_id, "append", metadata), app_transaction, *(app_transactions or []))
        self._append_write(table, data, partition_by=partition_by, props=props)

    def transaction_version(self, table: str, app_id: str) -> int | None:
        if not self.exists(table):
            return None
        return self.table(table).transaction_version(app_id)

    def replace_where(
        self,
        table: str,
        data: pa.Table,
        *,
        predicate: str,
        run_id: str | None = None,
        partition_by: Sequence[str] | None = None,
    ) -> None:
        """Replace exactly the rows matching `predicate` with `data` in one commit (gold's affected partitions)."""
        if not self.exists(table):
            self._append_write(table, data, partition_by=partition_by, props=_commit(run_id, "create"))
            return
        write_deltalake(
            self.uri(table),
            data,
            mode="overwrite",
            predicate=predicate,
            storage_options=self.storage_options or None,
            commit_properties=_commit(run_id, "replace_where", {"costlake.predicate": predicate}),
        )

    def overwrite(self, table: str, data: pa.Table, *, run_id: str | None = None, partition_by=None) -> None:
        """Replace the whole table (full rebuilds only)."""
        write_deltalake(
            self.uri(table),
            data,
            mode="overwrite",
            schema_mode="overwrite",
            partition_by=list(partition_by) if partition_by else None,
            storage_options=self.storage_options or None,
            commit_properties=_commit(run_id, "overwrite"),
        )

    def merge(
        self,
        table: str,
        data: pa.Table,
        *,
        keys: Sequence[str],
        run_id: str | None = None,
        partition_by: Sequence[str] | None = None,
        update_columns: Sequence[str] | None = None,
        insert: bool = True,
        extra_predicate: str = "",
        app_transaction: tuple[str, int] | None = None,
    ) -> dict[str, Any]:
        """Upsert `data` on `keys` (silver semantics). Creates the table on first write.

        `update_columns` limits which columns a match overwrites (e.g. only the amortized cost
        when the amortized report arrives); `extra_predicate` prunes target partitions.
        Target rows the source no longer has are for `delete` / `update` with a partition predicate:
        a WHEN NOT MATCHED BY SOURCE clause makes delta-rs scan every file of the table (delta-rs#4535).
        `app_transaction` records (app_id, version) atomically with the commit.
        """
        if not self.exists(table):
            self._append_write(
                table, data, partition_by=partition_by, props=_with_txn(_commit(run_id, "create"), app_transaction)
            )
            return {"num_target_rows_inserted": data.num_rows, "num_target_rows_updated": 0}
        # Null-safe key equality: a null key must match the same null key, never duplicate it.
        predicate = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        if extra_predicate:
            predicate = f"{predicate} AND ({extra_predicate})"
        merger = self.table(table).merge(
            data,
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            commit_properties=_with_txn(_commit(run_id, "merge"), app_transaction),
        )
        if update_columns is None:
            merger = merger.when_matched_update_all()
        else:
            merger = merger.when_matched_update({c: f"s.`{c}`" for c in update_columns})
        if insert:
            merger = merger.when_not_matched_insert_all()
        return merger.execute()

    def write_frame(
        self,
        table: str,
        frame: DataFrame,
        *,
        schema: pa.Schema,
        mode: str = "append",
        partition_by: Sequence[str] | None = None,
        partition_filters: Sequence[tuple[str, str, Sequence[str]]] | None = None,
        run_id: str | None = None,
        app_transaction: tuple[str, int] | None = None,
    ) -> FrameWrite:
        """Write a Spark DataFrame (columns in `schema` order) as one Delta commit.

        `mode` "append" adds the rows; "overwrite" replaces the partitions matching `partition_filters`
        (("col", "in", values) only), or the whole table without filters. On a local lake the executors
        write Parquet in parallel and delta-rs commits their add actions, so no row passes through the
        driver; on S3 (this Spark has no S3 filesystem) the rows come to the driver as Arrow.
        """
        if mode not in ("append", "overwrite"):
            raise ValueError(f"write_frame mode must be 'append' or 'overwrite', not {mode!r}")
        for column, op, _ in partition_filters or ():
            if op != "in" or column not in (partition_by or ()):
                raise ValueError(f"write_frame filters must be (partition column, 'in', values), got {column!r} {op!r}")
        if self.location.is_s3:
            return self._write_frame_arrow(
                table, frame, schema=schema, mode=mode, partition_by=partition_by,
                partition_filters=partition_filters, run_id=run_id, app_transaction=app_transaction,
            )  # fmt: skip
        root = Path(self.uri(table))
        staging = root / f"_staging-{uuid.uuid4().hex}"
        # Spark writes timestamps as INT96 unless told otherwise; Delta readers expect microseconds.
        frame.sparkSession.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        moved: list[Path] = []
        try:
            writer = frame.write.mode("errorifexists")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.parquet(str(staging))
            adds, result = self._stage_adds(staging, root, moved)
            props = _with_txn(_commit(run_id, "write_frame", {"costlake.mode": mode}), app_transaction)
            if not self.exists(table):
                from deltalake import Schema as DeltaSchema
                from deltalake.transaction import create_table_with_add_actions

                create_table_with_add_actions(
                    self.uri(table),
                    DeltaSchema.from_arrow(schema),
                    adds,
                    mode="append",
                    partition_by=list(partition_by) if partition_by else None,
                    storage_options=self.storage_options or None,
                    commit_properties=props,
                )
            else:
                self.table(table).create_write_transaction(
                    adds,
                    mode=mode,
                    schema=schema,
                    partition_by=list(partition_by) if partition_by else None,
                    partition_filters=[(c, op, list(v)) for c, op, v in partition_filters]
                    if partition_filters
                    else None,
                    commit_properties=props,
                )
        except BaseException:
            # Files moved into the table but never committed are invisible; remove them so nothing leaks.
            for path in moved:
                path.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("%s: committed %s rows in %s files (%s)", table, result.rows, result.files, mode)
        return result

    @staticmethod
    def _stage_adds(staging: Path, root: Path, moved: list[Path]):
        """Spark's output files -> Delta add actions, moved next to the table's other files (same partition folders)."""
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        adds, result, seen = [], FrameWrite(), set()
        for dirpath, _, names in os.walk(staging):
            for name in sorted(names):
                if not name.endswith(".parquet") or name.startswith((".", "_")):
                    continue  # _SUCCESS and Hadoop's .crc checksums stay behind and go with the staging folder
                source = Path(dirpath) / name
                rows = pq.read_metadata(source).num_rows
                if rows == 0:
                    continue
                rel = source.relative_to(staging)
                values = {}
                for part in rel.parts[:-1]:
                    key, _, value = part.partition("=")
                    values[unquote(key)] = None if value == _HIVE_NULL else unquote(value)
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                moved.append(target)
                stat = target.stat()
                adds.append(
                    AddAction(
                        path=rel.as_posix(),
                        size=stat.st_size,
                        partition_values=values,
                        modification_time=int(stat.st_mtime * 1000) or int(time.time() * 1000),
                        data_change=True,
                        stats=json.dumps({"numRecords": rows}),
                    )
                )
                result.rows += rows
                result.files += 1
                key = tuple(sorted(values.items()))
                if key not in seen:
                    seen.add(key)
                    result.partitions.append(values)
        return adds, result

    def _write_frame_arrow(
        self, table, frame, *, schema, mode, partition_by, partition_filters, run_id, app_transaction
    ):
        data = frame.toArrow().select(schema.names).cast(schema)
        if mode == "append":
            self.append(table, data, run_id=run_id, partition_by=partition_by, app_transaction=app_transaction)
        elif partition_filters:
            if app_transaction is not None:
                raise ValueError("app_transaction is only supported with append on S3")
            predicate = " AND ".join(
                f"{c} IN ({', '.join(_sql_literal(v) for v in values)})" for c, _, values in partition_filters
            )
            self.replace_where(table, data, predicate=predicate, run_id=run_id, partition_by=partition_by)
        else:
            if app_transaction is not None:
                raise ValueError("app_transaction is only supported with append on S3")
            self.overwrite(table, data, run_id=run_id, partition_by=partition_by)
        partitions = []
        if partition_by and data.num_rows:
            keys = data.select(list(partition_by)).group_by(list(partition_by)).aggregate([])
            partitions = [{k: (None if v is None else str(v)) for k, v in row.items()} for row in keys.to_pylist()]
        return FrameWrite(rows=data.num_rows, files=0, partitions=partitions)

    def delete(self, table: str, predicate: str, *, run_id: str | None = None) -> dict[str, Any]:
        """Delete the rows matching a SQL predicate (a partition column in it prunes the files scanned)."""
        if not self.exists(table):
            return {"num_deleted_rows": 0}
        return self.table(table).delete(predicate, commit_properties=_commit(run_id, "delete"))

    def update(
        self, table: str, updates: dict[str, str], predicate: str, *, run_id: str | None = None
    ) -> dict[str, Any]:
        """Set columns to SQL expressions on the rows matching a predicate (partition columns prune files)."""
        if not self.exists(table):
            return {"num_updated_rows": 0}
        return self.table(table).update(updates, predicate=predicate, commit_properties=_commit(run_id, "update"))


def _sql_literal(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def lake_from_settings(settings: Settings) -> Lake:
    return Lake(lake_location(settings))
