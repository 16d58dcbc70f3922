"""Benchmark: synthetic estate generation speed (rows/s) at 1M and 5M rows, against an Arrow copy of the same table, and chunking."""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from backend.config import Settings
from backend.demo.estate import SyntheticSource, generate_estate
from backend.sources.cursors import MemoryCursorStore
from bench.common import BenchResult, PeakMemory, timed

log = logging.getLogger("bench.synthetic")


def main(quick: bool = False) -> BenchResult:
    sizes = [200_000] if quick else [1_000_000, 5_000_000]
    result = BenchResult(
        name="synthetic" + ("_quick" if quick else ""),  # a smoke run must not overwrite the full results
        description=(
            "generate_estate(seed=42, start=2025-01-01, months=13, 6 subscriptions, 12 anomalies): wall time of "
            "the whole call (rows, commitments, anomalies, Arrow table with exact decimals), best of 2 runs; "
            "reference in the same run: an Arrow gather (take) of every row of the generated table, i.e. writing "
            "the same columns once, best of 2 (ratio = generate / reference, lower is better; it cancels most of "
            "the machine's load); then SyntheticSource chunking 7 days into Kafka-sized Parquet."
        ),
    )
    load_start = os.getloadavg()
    generate_estate(target_rows=20_000)  # warm imports and numpy
    for size in sizes:
        best = None
        peak = 0.0
        for _ in range(2):
            gc.collect()
            with PeakMemory() as memory, timed() as timer:
                estate = generate_estate(seed=42, target_rows=size)
            rows = estate.costs.num_rows
            peak = max(peak, memory.peak_gb)
            best = timer.seconds if best is None else min(best, timer.seconds)
        reference = None
        every_row = pa.array(np.arange(rows, dtype=np.int64))
        for _ in range(2):
            with timed() as timer:
                copy = estate.costs.take(every_row)
            del copy
            reference = timer.seconds if reference is None else min(reference, timer.seconds)
        result.rows.append(
            {
                "step": "generate",
                "target_rows": size,
                "rows": rows,
                "seconds": round(best, 3),
                "rows_per_s": round(rows / best),
                "reference_s": round(reference, 3),
                "ratio_vs_reference": round(best / reference, 2),
                "peak_rss_gb": peak,
                "anomalies": estate.labels.num_rows,
            }
        )
        log.info(
            "generate %d rows: %.2f s (%.0f rows/s), %.1fx an Arrow copy of the table",
            rows,
            best,
            rows / best,
            best / reference,
        )
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(_env_file=None, app_env="test", data_dir=Path(tmp))
            source = SyntheticSource(
                settings, estate, cursors=MemoryCursorStore(), until=estate.start + timedelta(days=6)
            )
            with timed() as timer:
                chunks = list(source.fetch("bench"))
            chunk_rows = sum(int(c.meta["row_count"]) for c in chunks)
            result.rows.append(
                {
                    "step": "chunk 7 days",
                    "target_rows": size,
                    "rows": chunk_rows,
                    "seconds": round(timer.seconds, 3),
                    "rows_per_s": round(chunk_rows / timer.seconds),
                    "chunks": len(chunks),
                    "mean_chunk_kb": round(sum(len(c.payload) for c in chunks) / len(chunks) / 1024, 1),
                }
            )
        del estate
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    start_load = ", ".join(f"{x:.1f}" for x in load_start)
    result.notes.append(
        f"start date {date(2025, 1, 1)}; {os.cpu_count()} cores shared with other engineers' work: load average "
        f"(1, 5, 15 min) at the start {start_load}, at the end {load}"
    )
    result.notes.append("target: >= 1M rows/s for generation")
    result.write()
    return result
