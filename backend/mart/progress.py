"""Progress marks that let gold and the mart finish what a killed run left behind, without a re-fetch.

Each stage records, once it succeeded, the version of the upstream Delta table it covered (gold:
silver; mart: gold cost_daily). The next run adds the months whose partitions changed since that
version to the months its own silver step touched. Unknown progress (first run, old lake, a version
no longer readable) means "everything".
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from backend.lake import Lake

log = logging.getLogger(__name__)

ALL = None  # sentinel: every month


def recorded_version(engine: sa.Engine, stage: str, upstream_table: str) -> int | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT upstream_table, upstream_version FROM ops.stage_progress WHERE stage = :s"), {"s": stage}
        ).first()
    if row is None or row.upstream_table != upstream_table:
        return None
    return int(row.upstream_version)


def has_stage(engine: sa.Engine, stage: str) -> bool:
    """Whether `stage` has recorded a mark before (for any upstream table)."""
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT 1 FROM ops.stage_progress WHERE stage = :s"), {"s": stage}).first()
    return found is not None


def record(engine: sa.Engine, stage: str, upstream_table: str, version: int | None, *, run_id: str) -> None:
    if version is None:
        return
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.stage_progress (stage, upstream_table, upstream_version, run_id, updated_at)"
                " VALUES (:s, :t, :v, :r, now()) ON CONFLICT (stage) DO UPDATE SET"
                " upstream_table = EXCLUDED.upstream_table, upstream_version = EXCLUDED.upstream_version,"
                " run_id = EXCLUDED.run_id, updated_at = now()"
            ),
            {"s": stage, "t": upstream_table, "v": int(version), "r": run_id},
        )


def pending_months(
    engine: sa.Engine, lake: Lake, *, stage: str, upstream_table: str, column: str
) -> tuple[set[str] | None, int | None]:
    """(months changed upstream since the stage's mark — None for "all" —, the upstream version now)."""
    current = lake.version(upstream_table)
    if current is None:
        return set(), None
    done = recorded_version(engine, stage, upstream_table)
    if done is None:
        log.info("%s: no progress mark on %s yet; every month is pending", stage, upstream_table)
        return ALL, current
    changed = lake.changed_partitions(upstream_table, column, since=done)
    if changed:
        log.info("%s: months changed in %s since version %s: %s", stage, upstream_table, done, sorted(changed))
    return changed, current


def merge_months(from_run: list[str] | None, pending: set[str] | None) -> list[str] | None:
    """This run's months plus the pending ones; None (all) wins."""
    if from_run is None or pending is None:
        return None
    return sorted(set(from_run) | pending)
