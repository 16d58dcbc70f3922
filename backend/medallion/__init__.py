"""Medallion jobs: bronze -> silver (FOCUS-aligned, typed, MERGEd, quarantine) -> gold (aggregates, affected partitions only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.medallion.jobs import MedallionStats


def run(settings, lake, spark, *, run_id: str, full_rebuild: bool = False) -> MedallionStats:
    """Entry point for the pipeline: see backend.medallion.jobs.run (imported lazily: schemas stay Spark-free)."""
    from backend.medallion.jobs import run as _run

    return _run(settings, lake, spark, run_id=run_id, full_rebuild=full_rebuild)
