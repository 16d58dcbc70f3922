"""The one Spark session factory: local[*] by default, memory from settings, UI off, UTC, Arrow on."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from backend.config import Settings
from backend.runtime.java import JavaRuntime, find_java

log = logging.getLogger(__name__)

_lock = threading.Lock()
_session = None
_java: JavaRuntime | None = None


def spark_conf(settings: Settings) -> dict[str, str]:
    """Every Spark setting Costlake uses, in one place (versions and tuning must not drift between jobs)."""
    scratch = settings.data_dir / "spark-tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": "costlake",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.ansi.enabled": "true",
        "spark.local.dir": str(scratch),
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -Dfile.encoding=UTF-8",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC -Dfile.encoding=UTF-8",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # Tags are case-folded into maps: "Env" and "env" on one resource must collapse, not fail the job.
        "spark.sql.mapKeyDedupPolicy": "LAST_WIN",
    }


def java_runtime(settings: Settings) -> JavaRuntime:
    global _java
    if _java is None:
        _java = find_java(settings.spark_java_home, settings.run_dir / "java")
    return _java


def get_spark(settings: Settings):
    """Build the process-wide SparkSession once; later calls return the same session."""
    global _session
    with _lock:
        if _session is not None:
            return _session
        java = java_runtime(settings)
        # spark-submit and the py4j gateway read these from the environment of this process.
        os.environ["JAVA_HOME"] = str(java.home)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        t0 = time.monotonic()
        builder = SparkSession.builder
        for key, value in spark_conf(settings).items():
            builder = builder.config(key, value)
        _session = builder.getOrCreate()
        _session.sparkContext.setLogLevel("ERROR")
        log.info(
            "spark %s ready in %.1fs (java %s from %s, master %s)",
            _session.version,
            time.monotonic() - t0,
            java.version,
            java.origin,
            settings.spark_master,
        )
        return _session


def stop_spark() -> None:
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None


def spark_running() -> bool:
    return _session is not None
