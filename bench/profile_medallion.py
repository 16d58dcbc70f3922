"""Times each Spark action of silver and gold separately on a fresh synthetic bronze (the profile behind e2e_profile.md)."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("bench.profile_medallion")


def _tree_cpu() -> float:
    """CPU seconds used so far by this process (the embedded engine runs in it) and its descendants, live and exited."""
    import psutil

    root = psutil.Process()
    total = sum(root.cpu_times()[:4])  # user, system, children_user, children_system
    for child in root.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _timed(name: str, action) -> None:
    # CPU seconds beside wall seconds: on a shared 2-core machine wall time follows the load, CPU time
    # much less so (it is what a change to the plan saves).
    c0, t0 = _tree_cpu(), time.perf_counter()
    action()
    log.info("%-38s %7.1f s wall %7.1f s cpu", name, time.perf_counter() - t0, _tree_cpu() - c0)


def main(rows: int) -> None:
    from pyspark.sql import functions as F  # noqa: N812

    from backend.config import Settings
    from backend.lake import engine, lake_from_settings
    from backend.lake.catalog import BRONZE_COST_RECORDS
    from backend.medallion import gold, refine, silver, staging
    from backend.medallion.parse import BRONZE_INPUT_COLUMNS
    from backend.runtime.spark import get_spark, stop_spark
    from bench.bench_e2e import estate_window
    from bench.bench_medallion import build_bronze

    root = Path(tempfile.mkdtemp(prefix="profile-medallion-"))
    try:
        settings = Settings(_env_file=None, app_env="test", data_dir=root, lake_uri=str(root / "lake"))
        spark = get_spark(settings)
        lake = lake_from_settings(settings)
        # The e2e bench's shape: 13 months, one message per (subscription, day).
        start, months = estate_window(datetime.now(UTC).date())
        _timed(
            f"build bronze ({rows:,} rows)",
            lambda: build_bronze(lake, rows, settings=settings, start=start, months=months),
        )
        bronze = engine.read(spark, lake, BRONZE_COST_RECORDS.name, BRONZE_COST_RECORDS.schema).select(
            *BRONZE_INPUT_COLUMNS
        )

        def noop(frame) -> None:
            frame.write.format("noop").mode("overwrite").save()

        _timed("stage (decode payloads in the engine)", lambda: noop(staging.stage(bronze)))
        _timed("stage + validate", lambda: noop(staging.validated(bronze)))
        _timed("stage + validate -> Parquet", lambda: staging.validated(bronze).write.parquet(str(root / "validated")))
        validated = spark.read.parquet(str(root / "validated"))
        rows_ok = validated.where(F.size("_rules") == 0)
        _timed("transform (from validated Parquet)", lambda: noop(silver.transform(rows_ok, run_id="p")))
        stats = refine.MedallionStats(run_id="p")
        _timed("run_silver (whole step)", lambda: refine.run_silver(spark, lake, stats, run_id="p"))
        log.info("run_silver seconds: %s", stats.seconds)
        silver_rows = refine.read_silver(spark, lake, None)
        daily = gold.cost_daily(silver_rows, run_id="p")
        _timed("gold cost_daily", lambda: noop(daily))
        _timed("gold resource_cost_changes (daily recomputed)", lambda: noop(gold.cost_changes(daily, run_id="p")))
        _timed("run_gold (whole step)", lambda: refine.run_gold(spark, lake, None, run_id="p"))
    finally:
        stop_spark()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m bench.profile_medallion")
    parser.add_argument("rows", type=int, nargs="?", default=1_000_000)
    main(parser.parse_args().rows)
