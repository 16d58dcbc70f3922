"""The metrics HTTP endpoint (`/metrics`, Prometheus text format) of the process that runs the pipeline.

Off unless METRICS_PORT is set. It listens on METRICS_BIND (loopback by default: the endpoint has no
login, and nothing it shows is secret, but budget names and subscription ids are still business data).
One server per process; `start_metrics` is idempotent and `stop_metrics` closes the socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.process_collector import ProcessCollector

from backend.config import Settings
from backend.metrics.collector import CostlakeCollector

log = logging.getLogger(__name__)


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread
    registry: CollectorRegistry
    collector: CostlakeCollector

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def kafka_lag_reader(settings: Settings, lake) -> Callable[[], dict[str, int]]:
    """Messages not yet in bronze per topic, as the Pipeline page computes them (backend.ingest.monitor)."""

    def read() -> dict[str, int]:
        from kafka.errors import KafkaError

        from backend.ingest.monitor import consumer_lag

        try:
            rows = consumer_lag(settings, lake)
        except KafkaError as exc:
            # Before the first ingest the topic does not exist (UNKNOWN_TOPIC_OR_PARTITION = 3): nothing lags.
            if "error code 3" in str(exc):
                return {settings.kafka_topic_costs: 0}
            raise
        lags: dict[str, int] = {}
        for row in rows:
            lags[row.topic] = lags.get(row.topic, 0) + row.lag
        return lags

    return read


def serve(
    engine: sa.Engine,
    settings: Settings,
    *,
    port: int | None = None,
    kafka_lag: Callable[[], dict[str, int]] | None = None,
) -> MetricsServer:
    """Start the endpoint on `port` (default METRICS_PORT; 0 here = any free port, for tests)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = CostlakeCollector(engine, settings, kafka_lag=kafka_lag)
    registry.register(collector)
    ProcessCollector(registry=registry)  # this process's CPU, memory and open files
    chosen = settings.metrics_port if port is None else port
    server, thread = start_http_server(chosen, addr=settings.metrics_bind, registry=registry)
    metrics = MetricsServer(server, thread, registry, collector)
    log.info("metrics endpoint listening on %s", metrics.url)
    return metrics


_current: MetricsServer | None = None
_lock = threading.Lock()


def start_metrics(engine: sa.Engine, settings: Settings, *, lake=None) -> MetricsServer | None:
    """The process's endpoint when METRICS_PORT is set (started once); None when metrics are off."""
    global _current
    if not settings.metrics_port:
        return None
    with _lock:
        if _current is None:
            lag = kafka_lag_reader(settings, lake) if lake is not None else None
            _current = serve(engine, settings, kafka_lag=lag)
        return _current


def stop_metrics() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            log.info("metrics endpoint stopped")
            _current = None


def start_for(resources) -> MetricsServer | None:
    """The endpoint for a process's Resources, reading through the read-only role (every figure is granted
    to it; budgets through v_budgets, without webhook URLs). None when METRICS_PORT is unset."""
    if not resources.settings.metrics_port:
        return None
    return start_metrics(resources.reader, resources.settings, lake=resources.lake)
