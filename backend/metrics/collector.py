"""The Prometheus collector: reads Costlake's current state from the run history and the mart at scrape time.

Values come from Postgres (through backend.mart.ops_stats and backend.mart.freshness), not from counters
kept in this process, so a restart never resets them, every replica reports the same figures, and they
agree with the Pipeline page. Counters built from the history (runs, rows, quarantined rows, agent
questions) only go down if history is deleted, which Prometheus reads as a counter reset.

The only in-process counter is `costlake_metrics_collect_errors_total`: it is about this process's scrapes
(an area that could not be read), which nothing in the database records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import sqlalchemy as sa
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.config import Settings
from backend.mart import ops_stats
from backend.mart.freshness import source_freshness

log = logging.getLogger(__name__)

PREFIX = "costlake"
# Kafka lag needs a broker round trip per partition; Prometheus scrapes every 15-30 s, so one answer serves
# a few scrapes instead of opening a consumer on each.
KAFKA_LAG_TTL_S = 30.0
# What a scrape reads, each on its own: one that fails is counted and logged, the others are still served.
AREAS = ("runs", "steps", "quarantine", "freshness", "mart", "anomalies", "budgets", "agent", "kafka")


class CostlakeCollector(Collector):
    """Every Costlake metric, read when scraped. `kafka_lag` returns {topic: messages not yet in bronze}."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        *,
        kafka_lag: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._kafka_lag = kafka_lag
        self._lag_cache: tuple[float, dict[str, int]] | None = None
        self._lag_lock = threading.Lock()
        # Not registered on its own: collect() yields it last, so a failure shows in the scrape it happened in.
        self.errors = Counter(
            f"{PREFIX}_metrics_collect_errors",
            "Scrapes of this process that could not read one area (see the app's log for why)",
            ["area"],
            registry=None,
        )
        for area in AREAS:
            self.errors.labels(area)  # every series exists from the first scrape, at 0

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: describing would query the database when the collector is registered.
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        for area in AREAS:
            read = getattr(self, f"_{area}")
            try:
                # Materialised first: a failure half-way must not leave half an area in the scrape.
                yield from list(read())
            except Exception:
                log.exception("metrics: could not read %s", area)
                self.errors.labels(area).inc()
        took = GaugeMetricFamily(f"{PREFIX}_metrics_collect_seconds", "Time this scrape spent reading Costlake's state")
        took.add_metric([], time.perf_counter() - started)
        yield took
        yield from self.errors.collect()

    # --- pipeline runs and steps -----------------------------------------------------------------------
    def _runs(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            f"{PREFIX}_pipeline_runs", "Pipeline runs recorded, by trigger and outcome", labels=["trigger", "status"]
        )
        for trigger, status, n in ops_stats.run_counts(self.engine):
            runs.add_metric([trigger, status], n)
        yield runs
        yield _histogram(
            f"{PREFIX}_pipeline_run_duration_seconds",
            "Duration of finished pipeline runs",
            ["status", "trigger"],
            ops_stats.run_durations(self.engine),
        )
        latest = ops_stats.latest_run(self.engine)
        last_ok = ops_stats.latest_run(self.engine, status="succeeded")
        info = GaugeMetricFamily(
            f"{PREFIX}_pipeline_last_run_success", "1 when the newest run succeeded, 0 when it failed or was abandoned"
        )
        started = GaugeMetricFamily(
            f"{PREFIX}_pipeline_last_run_start_timestamp_seconds", "When the newest run started"
        )
        seconds = GaugeMetricFamily(
            f"{PREFIX}_pipeline_last_run_duration_seconds", "Duration of the newest run (so far, while it runs)"
        )
        running = GaugeMetricFamily(f"{PREFIX}_pipeline_run_in_progress", "1 while the newest run is running")
        if latest is not None:
            running.add_metric([], 1.0 if latest.status == "running" else 0.0)
            started.add_metric([], latest.started_at.timestamp())
            if latest.status != "running":
                info.add_metric([], 1.0 if latest.status == "succeeded" else 0.0)
            elapsed = latest.seconds if latest.seconds is not None else time.time() - latest.started_at.timestamp()
            seconds.add_metric([], elapsed)
        yield from (info, started, seconds, running)
        ok = GaugeMetricFamily(
            f"{PREFIX}_pipeline_last_success_timestamp_seconds", "When the newest successful run finished"
        )
        if last_ok is not None and last_ok.finished_at is not None:
            ok.add_metric([], last_ok.finished_at.timestamp())
        yield ok

    def _steps(self) -> Iterator[Metric]:
        yield _histogram(
            f"{PREFIX}_pipeline_step_duration_seconds",
            "Duration of finished pipeline steps",
            ["step", "status"],
            ops_stats.step_durations(self.engine),
        )
        executions = CounterMetricFamily(
            f"{PREFIX}_pipeline_steps", "Pipeline step executions, by step and outcome", labels=["step", "status"]
        )
        rows = CounterMetricFamily(
            f"{PREFIX}_pipeline_step_rows",
            "Rows pipeline steps read (in) and wrote (out), summed over the history",
            labels=["step", "direction"],
        )
        by_step: dict[str, list[int]] = {}
        for t in ops_stats.step_totals(self.engine):
            executions.add_metric([t.step, t.status], t.count)
            acc = by_step.setdefault(t.step, [0, 0])
            acc[0] += t.rows_in
            acc[1] += t.rows_out
        for step, (rows_in, rows_out) in by_step.items():
            rows.add_metric([step, "in"], rows_in)
            rows.add_metric([step, "out"], rows_out)
        yield executions
        yield rows
        last_rows = GaugeMetricFamily(
            f"{PREFIX}_pipeline_step_last_rows",
            "Rows the newest execution of each step read (in) and wrote (out)",
            labels=["step", "direction"],
        )
        last_seconds = GaugeMetricFamily(
            f"{PREFIX}_pipeline_step_last_duration_seconds",
            "Duration of the newest finished execution of each step",
            labels=["step"],
        )
        last_ok = GaugeMetricFamily(
            f"{PREFIX}_pipeline_step_last_success",
            "1 when the newest execution of the step succeeded (or was skipped), 0 when it failed",
            labels=["step"],
        )
        for s in ops_stats.latest_steps(self.engine):
            if s.rows_in is not None:
                last_rows.add_metric([s.step, "in"], s.rows_in)
            if s.rows_out is not None:
                last_rows.add_metric([s.step, "out"], s.rows_out)
            if s.seconds is not None:
                last_seconds.add_metric([s.step], s.seconds)
            if s.status != "running":
                last_ok.add_metric([s.step], 1.0 if s.status in ("succeeded", "skipped") else 0.0)
        yield from (last_rows, last_seconds, last_ok)

    def _quarantine(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{PREFIX}_quarantined_rows",
            "Rows silver sent to quarantine, by the first validation rule they failed",
            labels=["rule"],
        )
        for rule, n in ops_stats.quarantined_rows(self.engine).items():
            family.add_metric([rule], n)
        yield family

    # --- freshness and the mart --------------------------------------------------------------------------
    def _freshness(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            f"{PREFIX}_source_data_age_hours",
            "Hours since the newest charge day of the source ended (UTC)",
            labels=["source"],
        )
        stale = GaugeMetricFamily(
            f"{PREFIX}_source_stale", "1 when the source's data is older than expected", labels=["source"]
        )
        expected = GaugeMetricFamily(
            f"{PREFIX}_source_expected_hours",
            "Hours after which the source counts as stale (0 = never)",
            labels=["source"],
        )
        loaded = GaugeMetricFamily(
            f"{PREFIX}_source_last_loaded_timestamp_seconds",
            "When the source last delivered to bronze",
            labels=["source"],
        )
        for f in source_freshness(self.engine, self.settings):
            if f.age_hours is not None:
                age.add_metric([f.source], f.age_hours)
            stale.add_metric([f.source], 1.0 if f.stale else 0.0)
            expected.add_metric([f.source], f.expected_hours)
            if f.last_loaded_at is not None:
                loaded.add_metric([f.source], f.last_loaded_at.timestamp())
        yield from (age, stale, expected, loaded)

    def _mart(self) -> Iterator[Metric]:
        counts, last_ok = ops_stats.mart_loads(self.engine)
        loads = CounterMetricFamily(f"{PREFIX}_mart_loads", "Mart loads recorded, by outcome", labels=["status"])
        for status, n in sorted(counts.items()):
            loads.add_metric([status], n)
        yield loads
        ok = GaugeMetricFamily(
            f"{PREFIX}_mart_last_load_success_timestamp_seconds", "When the last successful load finished"
        )
        if last_ok is not None:
            ok.add_metric([], last_ok.timestamp())
        yield ok

    # --- analytics, budgets, agent -------------------------------------------------------------------------
    def _anomalies(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_anomalies_open", "Open anomalies (not marked expected or resolved)", labels=["level", "kind"]
        )
        for level, kind, n in ops_stats.open_anomalies(self.engine):
            family.add_metric([level, kind], n)
        yield family

    def _budgets(self) -> Iterator[Metric]:
        labels = ["budget", "period", "currency"]
        burn = GaugeMetricFamily(
            f"{PREFIX}_budget_burn_percent", "Percent of the budget its current period has spent", labels=labels
        )
        spent = GaugeMetricFamily(f"{PREFIX}_budget_spent", "What the budget's current period has spent", labels=labels)
        amount = GaugeMetricFamily(f"{PREFIX}_budget_amount", "The budget's amount per period", labels=labels)
        for b in ops_stats.budget_burns(self.engine):
            key = [b.name, b.period, b.currency]
            burn.add_metric(key, b.percent)
            spent.add_metric(key, b.spent)
            amount.add_metric(key, b.amount)
        yield from (burn, spent, amount)

    def _agent(self) -> Iterator[Metric]:
        questions = CounterMetricFamily(
            f"{PREFIX}_agent_questions", "Questions the cost agent was asked (chat and MCP)", labels=["channel"]
        )
        failures = CounterMetricFamily(
            f"{PREFIX}_agent_failures", "Questions the cost agent failed to answer", labels=["channel"]
        )
        totals: dict[str, int] = {}
        failed: dict[str, int] = {}
        for channel, outcome, n in ops_stats.agent_questions(self.engine):
            totals[channel] = totals.get(channel, 0) + n
            if outcome == "failed":
                failed[channel] = failed.get(channel, 0) + n
        for channel in ("chat", "mcp"):
            questions.add_metric([channel], totals.get(channel, 0))
            failures.add_metric([channel], failed.get(channel, 0))
        yield questions
        yield failures

    def _kafka(self) -> Iterator[Metric]:
        if self._kafka_lag is None:
            return
        with self._lag_lock:  # concurrent scrapes share one broker round trip
            now = time.monotonic()
            if self._lag_cache is None or now - self._lag_cache[0] > KAFKA_LAG_TTL_S:
                self._lag_cache = (now, self._kafka_lag())
            lags = self._lag_cache[1]
        family = GaugeMetricFamily(
            f"{PREFIX}_kafka_consumer_lag_messages",
            "Messages on the topic the bronze consumer group has not written to bronze yet",
            labels=["topic"],
        )
        for topic, lag in sorted(lags.items()):
            family.add_metric([topic], lag)
        yield family


def _histogram(
    name: str, doc: str, labels: list[str], groups: Iterable[ops_stats.DurationHistogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for g in groups:
        buckets = [(_bound(b), n) for b, n in g.buckets] + [("+Inf", g.count)]
        family.add_metric(list(g.labels), buckets, g.total_seconds)
    return family


def _bound(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{int(value)}.0"
