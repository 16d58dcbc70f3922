"""The one place that starts, health-checks and stops every service: embedded when its setting is empty, else external."""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from backend.config import Settings, redact_url
from backend.lake.storage import LakeLocation, check_lake, ensure_lake, lake_location
from backend.mart.db import owner_engine
from backend.runtime import kafka as kafka_service
from backend.runtime import postgres as pg_service
from backend.runtime.registry import ServiceRegistry

log = logging.getLogger(__name__)

SERVICES = ("postgres", "kafka", "lake", "spark")


@dataclass
class ServiceStatus:
    name: str
    mode: str  # "embedded" or "external"
    location: str  # never contains a secret
    healthy: bool
    detail: str = ""
    startup_seconds: float | None = None


@dataclass
class Endpoints:
    """Where each service is, once started. Clients are built from this, never from raw settings URLs."""

    database_url: str
    kafka_bootstrap_servers: str
    lake: LakeLocation
    embedded: dict[str, bool] = field(default_factory=dict)


class Runtime:
    """Owns the embedded servers of this process. `start()` is idempotent; `stop()` releases them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ServiceRegistry(settings.run_dir)
        self.endpoints: Endpoints | None = None
        self.startup_seconds: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._reaper: subprocess.Popen | None = None
        self._spark_thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------
    def start(self, *, spark: bool = False, kafka: bool = True) -> Endpoints:
        """Start or join every embedded service (external ones are only resolved). `kafka=False` is for a
        process that only reads the mart (the MCP server): it leaves the broker alone."""
        with self._lock:
            if self.endpoints is not None:
                return self.endpoints
            s = self.settings
            s.data_dir.mkdir(parents=True, exist_ok=True)
            embedded = {
                "postgres": not s.database_url,
                "kafka": kafka and not s.kafka_bootstrap_servers,
                "lake": not s.lake_uri,
            }
            if embedded["postgres"] or embedded["kafka"]:
                self._start_reaper()
                atexit.register(self.stop)

            t0 = time.monotonic()
            database_url = s.database_url or pg_service.start(s.data_dir / "pg", self.registry, owner_pid=os.getpid())
            self.startup_seconds["postgres"] = time.monotonic() - t0

            t0 = time.monotonic()
            bootstrap = s.kafka_bootstrap_servers
            if embedded["kafka"]:
                try:
                    bootstrap = kafka_service.start(self.registry, s.logs_dir / "kafka.log", owner_pid=os.getpid())
                except kafka_service.EmbeddedKafkaUnavailableError as exc:
                    # The app still serves the mart and file imports; the status page explains the fix.
                    self.errors["kafka"] = str(exc)
                    log.error("%s", exc)
            self.startup_seconds["kafka"] = time.monotonic() - t0

            t0 = time.monotonic()
            lake = lake_location(s)
            try:
                ensure_lake(lake)
            except Exception as exc:  # noqa: BLE001 - reported on the status page, the rest still starts
                self.errors["lake"] = f"{type(exc).__name__}: {exc}"
                log.error("lake %s not reachable: %s", lake.display(), exc)
            self.startup_seconds["lake"] = time.monotonic() - t0

            self.endpoints = Endpoints(database_url, bootstrap, lake, embedded)
        if spark:
            self.start_spark_in_background()
        return self.endpoints

    def resolved_settings(self) -> Settings:
        """Settings with the embedded servers' addresses filled in, for modules that take Settings."""
        endpoints = self.endpoints or self.start()
        return self.settings.model_copy(
            update={
                "database_url": endpoints.database_url,
                "kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
            }
        )

    def start_spark_in_background(self) -> None:
        """Start the engine (Sail ~1 s, a JVM ~8 s) off the request path."""
        if self._spark_thread is not None:
            return

        def _warm() -> None:
            from backend.runtime.spark import get_spark

            t0 = time.monotonic()
            try:
                get_spark(self.settings).range(1).count()
                self.startup_seconds["spark"] = time.monotonic() - t0
            except Exception as exc:
                self.errors["spark"] = f"{type(exc).__name__}: {exc}"
                log.exception("spark failed to start")

        self._spark_thread = threading.Thread(target=_warm, name="spark-warmup", daemon=True)
        self._spark_thread.start()

    def stop(self) -> None:
        """Release embedded servers; each stops when its last user (process) is gone."""
        with self._lock:
            if self.endpoints is None:
                return
            if self._spark_thread is not None:
                # Only the runtime that started Spark stops it: the session is process-wide.
                from backend.runtime.spark import stop_spark

                stop_spark()
            if self.endpoints.embedded.get("kafka"):
                kafka_service.release(self.registry, owner_pid=os.getpid())
            if self.endpoints.embedded.get("postgres"):
                pg_service.release(self.settings.data_dir / "pg", self.registry, owner_pid=os.getpid())
            self.endpoints = None
            if self._reaper is not None and self._reaper.poll() is None:
                self._reaper.terminate()
            self._reaper = None

    def _start_reaper(self) -> None:
        # A watchdog process that releases our embedded servers if this process dies without running
        # atexit (SIGKILL, OOM): no Postgres or Tansu is ever left orphaned.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "backend.runtime.reaper", str(os.getpid()), str(self.settings.data_dir)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": _repo_root_on_path()},
        )

    # --- health --------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        endpoints = self.endpoints or self.start()
        return [
            self._postgres_status(endpoints),
            self._kafka_status(endpoints),
            self._lake_status(endpoints),
            self._spark_status(),
        ]

    def _postgres_status(self, ep: Endpoints) -> ServiceStatus:
        mode = "embedded" if ep.embedded.get("postgres") else "external"
        location = redact_url(ep.database_url)
        try:
            engine = owner_engine(ep.database_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})
            with engine.connect() as conn:
                version = conn.execute(sa.text("SHOW server_version")).scalar()
            engine.dispose()
            return ServiceStatus(
                "postgres", mode, location, True, f"PostgreSQL {version}", self.startup_seconds.get("postgres")
            )
        except Exception as exc:  # noqa: BLE001 - a status report, not control flow
            return ServiceStatus("postgres", mode, location, False, f"{type(exc).__name__}: {exc}")

    def _kafka_status(self, ep: Endpoints) -> ServiceStatus:
        mode = "embedded" if ep.embedded.get("kafka") else "external"
        if not ep.kafka_bootstrap_servers:
            return ServiceStatus("kafka", mode, "-", False, self.errors.get("kafka", "not configured"))
        try:
            from kafka import KafkaAdminClient

            timeout = self.settings.kafka_probe_timeout_ms  # fail fast: a page waits on this check
            admin = KafkaAdminClient(
                bootstrap_servers=ep.kafka_bootstrap_servers,
                client_id="costlake-health",
                bootstrap_timeout_ms=timeout,
                request_timeout_ms=timeout,
            )
            try:
                topics = admin.list_topics()
            finally:
                admin.close()
            detail = f"{len(topics)} topic(s)"
            return ServiceStatus(
                "kafka", mode, ep.kafka_bootstrap_servers, True, detail, self.startup_seconds.get("kafka")
            )
        except Exception as exc:  # noqa: BLE001
            return ServiceStatus("kafka", mode, ep.kafka_bootstrap_servers, False, f"{type(exc).__name__}: {exc}")

    def _lake_status(self, ep: Endpoints) -> ServiceStatus:
        mode = "embedded" if ep.embedded.get("lake") else "external"
        try:
            detail = check_lake(ep.lake)
            return ServiceStatus("lake", mode, ep.lake.display(), True, detail, self.startup_seconds.get("lake"))
        except Exception as exc:  # noqa: BLE001
            return ServiceStatus("lake", mode, ep.lake.display(), False, f"{type(exc).__name__}: {exc}")

    def _spark_status(self) -> ServiceStatus:
        from backend.runtime.spark import engine_info, engine_kind, spark_running

        kind = engine_kind(self.settings)
        mode = {"sail": "embedded", "jvm": "embedded", "remote": "external"}[kind]
        location = {"sail": "in process", "jvm": self.settings.spark_master, "remote": self.settings.spark_remote}[kind]
        if "spark" in self.errors:
            return ServiceStatus("spark", mode, location, False, self.errors["spark"])
        info = engine_info()
        if not spark_running() or info is None or "spark" not in self.startup_seconds:
            return ServiceStatus("spark", mode, location, False, f"starting… ({kind} engine)")
        try:
            from backend.runtime.spark import get_spark

            get_spark(self.settings).range(1).count()  # the health check: a real round trip to the engine
        except Exception as exc:  # noqa: BLE001 - a status report, not control flow
            return ServiceStatus("spark", mode, info.location, False, f"{type(exc).__name__}: {exc}")
        return ServiceStatus(
            "spark",
            mode,
            info.location,
            True,
            f"Spark {info.version} on {info.kind}: {info.detail}",
            self.startup_seconds.get("spark"),
        )


def _repo_root_on_path() -> str:
    from backend.config import REPO_ROOT

    existing = os.environ.get("PYTHONPATH", "")
    return f"{REPO_ROOT}{os.pathsep}{existing}" if existing else str(REPO_ROOT)
