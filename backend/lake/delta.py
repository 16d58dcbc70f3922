"""Delta table I/O through delta-rs for what needs no engine: ingest appends, progress marks, small tables, history, maintenance."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from backend.config import Settings
from backend.lake.storage import LakeLocation, lake_location

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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

    # --- maintenance ---------------------------------------------------------------
    def compact(self, table: str, *, run_id: str | None = None) -> dict[str, Any]:
        """Rewrite small files into larger ones (a dataChange=false commit: readers see the same rows)."""
        return self.table(table).optimize.compact(commit_properties=_commit(run_id, "compact"))

    def vacuum(self, table: str, *, retention_hours: int) -> int:
        """Delete files no version within `retention_hours` references; returns how many went."""
        removed = self.table(table).vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
        )
        return len(removed)


def lake_from_settings(settings: Settings) -> Lake:
    return Lake(lake_location(settings))
