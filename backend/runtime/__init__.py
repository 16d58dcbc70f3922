"""Embedded servers and client factories: Postgres, Kafka (Tansu), the lake, Java and Spark."""

from __future__ import annotations

import signal
import threading

from backend.runtime.services import Endpoints, Runtime, ServiceStatus

__all__ = ["Endpoints", "Runtime", "ServiceStatus", "exit_on_sigterm"]


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so atexit hooks release embedded servers (CLI processes only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
