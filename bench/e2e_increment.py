"""Reruns the e2e increment's gold and mart work on a data folder `python -m bench e2e --keep DIR` left, to time changes without a full load.

    python -m bench.e2e_increment DIR/n1000000 [--repeat 3]

The folder holds the lake and the embedded Postgres after the e2e scenarios; its last charge day is the
increment's day. Each repeat recomputes that day's gold (as the gold step does for an increment: the
month as target, the day as the only one silver touched), replaces the day in the mart and reconciles
the month, the same calls the gold and mart steps make. Both are idempotent, so every repeat does the same work.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("bench.e2e_increment")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e_increment")
    parser.add_argument("data_dir", type=Path, help="a size's folder kept by `python -m bench e2e --keep`")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "alembic", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pyspark.sql import functions as F  # noqa: N812  (the PySpark convention)

    from backend.config import Settings
    from backend.lake.catalog import SILVER_COSTS
    from backend.lake.engine import read
    from backend.mart.load import load_gold
    from backend.mart.reconcile import reconcile
    from backend.medallion.refine import run_gold
    from backend.pipeline.service import PipelineService
    from backend.resources import open_resources
    from backend.runtime import Runtime
    from backend.runtime.spark import get_spark
    from backend.sources.fx import reporting_currency

    settings = Settings(_env_file=None, app_env="test", data_dir=args.data_dir, scheduler_enabled=False)
    service = PipelineService(open_resources(Runtime(settings)))
    try:
        spark = get_spark(service.settings)
        lake = service.lake
        day = read(spark, lake, SILVER_COSTS.name, SILVER_COSTS.schema).agg(F.max("x_ChargeDate")).first()[0]
        month = day.strftime("%Y-%m")
        currency = reporting_currency(service.settings, lake)
        for i in range(args.repeat):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            run_gold(
                spark, lake, [month], run_id=f"inc-{i}", days={month: [day.isoformat()]}, reporting_currency=currency
            )
            t1 = time.perf_counter()
            # The mart loaded the previous repeat's gold, so only the day changed: replaced in place, as
            # the mart step does after a day-level gold.
            stats = load_gold(service.engine, lake, run_id=f"inc-{i}", months=[month], days={month: [day.isoformat()]})
            t2 = time.perf_counter()
            report = reconcile(service.engine, lake=lake, months=[month], run_id=f"inc-{i}")
            t3 = time.perf_counter()
            log.info(
                "increment %s of %s: gold %.2fs, mart load %.2fs (phases %s), reconcile %.2fs, %d mismatches; "
                "load %.1f->%.1f",
                i,
                day,
                t1 - t0,
                t2 - t1,
                stats.phase_seconds,
                t3 - t2,
                len(report.mismatches),
                load,
                os.getloadavg()[0],
            )
    finally:
        service.stop()
        service.close()


if __name__ == "__main__":
    main()
