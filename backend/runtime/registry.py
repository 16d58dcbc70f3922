"""Shared state of embedded servers so that one process tree starts each server once and the last user stops it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


@dataclass
class ServiceRecord:
    """What a running embedded server looks like to the processes that share it."""

    name: str
    pid: int
    address: str
    started_at: float
    create_time: float
    users: list[int] = field(default_factory=list)

    def is_alive(self) -> bool:
        return pid_alive(self.pid, self.create_time)


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """True when `pid` runs and (if given) is the same process that was recorded, not a reused pid."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


class ServiceRegistry:
    """A JSON file per service under the run directory, guarded by an flock."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Serialises start/stop decisions about one service across processes."""
        with (self.run_dir / f"{name}.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self, name: str) -> ServiceRecord | None:
        path = self._path(name)
        if not path.exists():
            return None
        try:
            return ServiceRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            log.warning("ignoring unreadable service record %s", path)
            return None

    def write(self, record: ServiceRecord) -> None:
        path = self._path(record.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)

    def remove(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    @staticmethod
    def live_users(record: ServiceRecord, *, excluding: int | None = None) -> list[int]:
        return [pid for pid in record.users if pid != excluding and pid_alive(pid)]

    def release(self, name: str, *, owner_pid: int, stop: Callable[[ServiceRecord], None]) -> bool:
        """Drop `owner_pid` as a user of `name`; call `stop` when no live user is left. True if it stopped."""
        with self.locked(name):
            record = self.read(name)
            if record is None:
                return False
            record.users = self.live_users(record, excluding=owner_pid)
            if record.users:
                self.write(record)
                return False
            if record.is_alive():
                log.info("stopping embedded %s (pid %s)", name, record.pid)
                stop(record)
            self.remove(name)
            return True
