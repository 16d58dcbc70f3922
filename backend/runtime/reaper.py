"""Watchdog process: when its owner dies without cleaning up (SIGKILL, OOM), it releases the owner's embedded servers."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from backend.runtime import kafka as kafka_service
from backend.runtime import postgres as pg_service
from backend.runtime.registry import ServiceRegistry, pid_alive

log = logging.getLogger("backend.runtime.reaper")


def watch(owner_pid: int, data_dir: Path, poll_seconds: float = 0.5) -> None:
    # Ctrl-C in a terminal hits the whole foreground group; the reaper must outlive its owner to do its job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while pid_alive(owner_pid):
        time.sleep(poll_seconds)
    registry = ServiceRegistry(data_dir / "run")
    stopped_kafka = kafka_service.release(registry, owner_pid=owner_pid)
    stopped_pg = pg_service.release(data_dir / "pg", registry, owner_pid=owner_pid)
    log.info("owner %s gone; kafka stopped=%s postgres stopped=%s", owner_pid, stopped_kafka, stopped_pg)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    watch(int(sys.argv[1]), Path(sys.argv[2]))
