"""The one Spark session factory: an embedded Sail Spark Connect server (default), any Spark Connect server, or local JVM Spark."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from backend.config import Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_session = None
_engine: EngineInfo | None = None
_sail_server = None


@dataclass(frozen=True)
class EngineInfo:
    """Which engine the process's session runs on, for status pages and logs."""

    kind: str  # "sail" | "remote" | "jvm"
    location: str  # sc://127.0.0.1:<port>, the remote URL, or the JVM master
    version: str  # the server's Spark version
    detail: str = ""


def engine_kind(settings: Settings) -> str:
    """sail | remote | jvm: SPARK_REMOTE wins, else SPARK_ENGINE."""
    return "remote" if settings.spark_remote else settings.spark_engine


def session_conf(settings: Settings) -> dict[str, str]:
    """Session settings every engine honours (the jobs rely on them: UTC days, ANSI casts, dynamic overwrite)."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "true",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # Tags are case-folded into maps: "Env" and "env" on one resource must collapse, not fail the job.
        "spark.sql.mapKeyDedupPolicy": "LAST_WIN",
    }


def jvm_conf(settings: Settings) -> dict[str, str]:
    """The classic local JVM engine's settings (versions and tuning must not drift between jobs)."""
    scratch = settings.data_dir / "spark-tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": "costlake",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.local.dir": str(scratch),
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -Dfile.encoding=UTF-8",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC -Dfile.encoding=UTF-8",
        **session_conf(settings),
    }


def sail_environment(settings: Settings) -> dict[str, str]:
    """Environment the embedded Sail server reads its configuration and object-store credentials from.

    Sail configures itself from `SAIL_*` variables and reaches S3 through the AWS variables of its
    process (it runs inside this one), so the lake's credentials are handed over here, once.
    """
    env = {"SAIL_MODE": "local"}
    if settings.sail_parallelism:
        env["SAIL_EXECUTION__DEFAULT_PARALLELISM"] = str(settings.sail_parallelism)
    if settings.sail_memory_limit_mb:
        spill = settings.data_dir / "spark-tmp"
        spill.mkdir(parents=True, exist_ok=True)
        env["SAIL_RUNTIME__MEMORY_POOL__TYPE"] = "fair"
        env["SAIL_RUNTIME__MEMORY_POOL__FAIR__MAX_SIZE"] = str(settings.sail_memory_limit_mb * 1024 * 1024)
        env["SAIL_RUNTIME__TEMPORARY_FILES__PATHS"] = f'["{spill}"]'

    if settings.lake_is_s3:
        env["AWS_REGION"] = settings.s3_region
        if settings.s3_access_key_id:
            env["AWS_ACCESS_KEY_ID"] = settings.s3_access_key_id
        if settings.s3_secret_access_key is not None:
            env["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
        if settings.s3_endpoint_url:
            env["AWS_ENDPOINT"] = settings.s3_endpoint_url
            env["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
            # MinIO and test servers speak plain http on a path-style endpoint.
            env["AWS_ALLOW_HTTP"] = "true" if settings.s3_endpoint_url.startswith("http://") else "false"
            env["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    return env


def _start_sail(settings: Settings) -> str:
    """Start the in-process Sail server once; returns its sc:// URL."""
    global _sail_server
    if _sail_server is None:
        os.environ.update(sail_environment(settings))
        # Sail logs through Rust's env_logger; its planner warns on every broadcast hint (a no-op there).
        os.environ.setdefault("RUST_LOG", "debug" if settings.log_level.upper() == "DEBUG" else "error")
        from pysail.spark import SparkConnectServer

        server = SparkConnectServer("127.0.0.1", 0)
        server.start(background=True)
        _sail_server = server
    host, port = _sail_server.listening_address
    return f"sc://{host}:{port}"


def _connect(url: str, settings: Settings):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(url)
    for key, value in session_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def jvm_session(settings: Settings):
    """A classic local JVM Spark session (the `jvm` engine; also how tests prove the transforms on Apache Spark)."""
    from backend.runtime.java import find_java

    java = find_java(settings.spark_java_home, settings.run_dir / "java")
    # spark-submit and the py4j gateway read these from the environment of this process.
    os.environ["JAVA_HOME"] = str(java.home)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in jvm_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session, f"Java {java.version} ({java.origin})"


def get_spark(settings: Settings):
    """Build the process-wide SparkSession once; later calls return the same session."""
    global _session, _engine
    with _lock:
        if _session is not None:
            return _session
        t0 = time.monotonic()
        kind = engine_kind(settings)
        detail = ""
        if kind == "jvm":
            _session, detail = jvm_session(settings)
            location = settings.spark_master
        else:
            location = settings.spark_remote if kind == "remote" else _start_sail(settings)
            _session = _connect(location, settings)
            detail = "embedded Sail (no JVM)" if kind == "sail" else "Spark Connect server"
        _engine = EngineInfo(kind, location, _session.version, detail)
        log.info("spark %s ready in %.1fs (%s, %s)", _session.version, time.monotonic() - t0, kind, location)
        return _session


def engine_info() -> EngineInfo | None:
    return _engine


def stop_spark() -> None:
    """Stop the session and, when this process owns it, the embedded Sail server (in that order: a session
    whose server is gone retries its release for a while)."""
    global _session, _engine, _sail_server
    with _lock:
        for what, closable in (("spark session", _session), ("sail server", _sail_server)):
            if closable is None:
                continue
            try:
                closable.stop()
            except Exception:  # a server already gone must not block shutdown
                log.warning("%s did not stop cleanly", what, exc_info=True)
        _session, _engine, _sail_server = None, None, None


def spark_running() -> bool:
    return _session is not None
