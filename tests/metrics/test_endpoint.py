"""`/metrics` served over real HTTP after real pipeline runs and a real mart load, parsed with Prometheus's parser.

Every value asserted is also read back from the mart or the run history, so the endpoint says what the
database holds (quarantined rows, open anomalies, budget burn, runs, agent questions, Kafka lag)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from backend.lake import lake_from_settings
from backend.lake.storage import lake_location
from backend.mart.load import load_gold
from backend.mart.run_records import StepResult
from backend.metrics.server import kafka_lag_reader, serve, start_metrics
from backend.pipeline.runner import PipelineContext, run_pipeline
from backend.runtime import Endpoints
from tests.mart import synthetic_gold

WEBHOOK_SECRET = "hooks-token-do-not-leak"
RUN_NOW_JOB = "manual-1a2b3c4d"
QUARANTINE = {"charge_date_missing": 3, "cost_not_a_number": 2}


def scrape(url: str) -> tuple[str, dict[str, list]]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    families = {f.name: f.samples for f in text_string_to_metric_families(body)}
    return body, families


def value(families: dict[str, list], sample: str, **labels: str) -> float:
    base = sample
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        base = base.removesuffix(suffix)
    family = families[base]
    found = [s.value for s in family if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (sample, labels, family)
    return found[0]


def _silver(ctx: PipelineContext) -> StepResult:
    return StepResult(rows_in=105, rows_out=100, detail={"quarantined": 5, "quarantine_rules": QUARANTINE})


def _ok(ctx: PipelineContext) -> StepResult:
    return StepResult(rows_in=10, rows_out=10)


def _boom(ctx: PipelineContext) -> StepResult:
    raise RuntimeError("gold failed on purpose")


@pytest.fixture
def seeded(tmp_path, settings, mart_url, owner):
    """Two recorded runs (one failed), 40 days of cost through the mart loader, anomalies, a budget, audits."""
    settings = settings.model_copy(update={"database_url": mart_url, "stale_after_hours_file": 24.0})
    lake = lake_from_settings(settings)

    def factory(run_id: str) -> PipelineContext:
        endpoints = Endpoints(mart_url, settings.kafka_bootstrap_servers, lake_location(settings))
        return PipelineContext(settings, endpoints, owner, lake, run_id, ["inbox"])

    registry = {"ingest": _ok, "silver": _silver, "gold": _ok, "broken": _boom}
    # "Run now" queues a one-off scheduler job: its id must not become a label value.
    assert run_pipeline(factory, steps=["ingest"], registry=registry, trigger=f"schedule:{RUN_NOW_JOB}").status == (
        "succeeded"
    )
    assert run_pipeline(factory, steps=["ingest", "silver", "gold"], registry=registry, trigger="manual").status == (
        "succeeded"
    )
    failed = run_pipeline(factory, steps=["ingest", "broken"], registry=registry, trigger="schedule:pipeline-hourly")
    assert failed.status == "failed"

    as_of = dt.date.today() - dt.timedelta(days=5)
    synthetic_gold.write_gold(
        lake, synthetic_gold.gold_cost_daily(start=as_of - dt.timedelta(days=39), days=40, rows_per_day=30)
    )
    load_gold(owner, lake, run_id="seed")
    with owner.begin() as conn:
        # Files delivered up to as_of, 5 days ago: stale against the 24 h file expectation.
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at) "
                "VALUES ('file', '/subscriptions/a', 'ActualCost', :d, 'b1', now())"
            ),
            {"d": as_of},
        )
        for level, kind, status in (("service", "spike", "open"), ("service", "spike", "open"),
                                    ("subscription", "drop", "open"), ("service", "spike", "expected")):  # fmt: skip
            conn.execute(
                sa.text(
                    "INSERT INTO mart.anomalies (level, dimension_value, metric, charge_date, actual, kind, status, currency) "
                    "VALUES (:l, gen_random_uuid()::text, 'actual', :d, 1, :k, :s, 'EUR')"
                ),
                {"l": level, "k": kind, "s": status, "d": as_of},
            )
        currency = conn.execute(sa.text("SELECT currency_code FROM mart.dim_currency WHERE currency_key > 0")).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period, webhook_url) "
                "VALUES ('Platform', 'total', '', 1000, :c, 'monthly', :w)"
            ),
            {"c": currency, "w": f"https://hooks.example/{WEBHOOK_SECRET}"},
        )
        for user, error in (("alice", None), ("bob", "LLM timed out"), ("mcp:claude", None)):
            conn.execute(
                sa.text("INSERT INTO mart.agent_audit (user_name, question, error) VALUES (:u, 'why?', :e)"),
                {"u": user, "e": error},
            )
    return settings, lake, as_of, currency


@pytest.fixture
def endpoint(seeded, reader):
    settings, lake, *_ = seeded
    from backend.ingest.clients import ensure_topics, make_producer

    ensure_topics(settings)
    producer = make_producer(settings)
    for i in range(3):  # one batch each: Tansu reports the end offset as the last batch's base offset + 1
        producer.send(settings.kafka_topic_costs, f"chunk {i}".encode()).get(timeout=30)
        producer.flush()
    producer.close()
    server = serve(reader, settings, port=0, kafka_lag=kafka_lag_reader(settings, lake))
    yield server
    server.stop()


def test_metrics_match_the_mart(seeded, endpoint, owner):
    settings, _, as_of, currency = seeded
    body, families = scrape(endpoint.url)

    # Runs and steps, from the run history.
    assert value(families, "costlake_pipeline_runs_total", trigger="manual", status="succeeded") == 1
    assert value(families, "costlake_pipeline_runs_total", trigger="schedule:pipeline-hourly", status="failed") == 1
    assert value(families, "costlake_pipeline_runs_total", trigger="schedule:manual", status="succeeded") == 1
    assert RUN_NOW_JOB not in body
    assert value(families, "costlake_pipeline_last_run_success") == 0
    assert value(families, "costlake_pipeline_run_duration_seconds_count", status="failed",
                 trigger="schedule:pipeline-hourly") == 1  # fmt: skip
    assert value(families, "costlake_pipeline_step_duration_seconds_count", step="ingest", status="succeeded") == 3
    assert value(families, "costlake_pipeline_step_duration_seconds_bucket", step="ingest", status="succeeded",
                 le="+Inf") == 3  # fmt: skip
    assert value(families, "costlake_pipeline_steps_total", step="broken", status="failed") == 1
    assert value(families, "costlake_pipeline_step_rows_total", step="silver", direction="in") == 105
    assert value(families, "costlake_pipeline_step_last_rows", step="silver", direction="out") == 100
    assert value(families, "costlake_pipeline_step_last_success", step="broken") == 0

    # Quarantine: per rule, as silver recorded it.
    for rule, n in QUARANTINE.items():
        assert value(families, "costlake_quarantined_rows_total", rule=rule) == n

    # Open anomalies per level and kind equal the mart's count.
    with owner.connect() as conn:
        open_count = conn.execute(sa.text("SELECT count(*) FROM mart.anomalies WHERE status = 'open'")).scalar()
        spent = conn.execute(
            sa.text("SELECT sum(actual_cost) FROM mart.agg_cost_daily WHERE charge_date BETWEEN :s AND :e"),
            {"s": as_of.replace(day=1), "e": as_of},
        ).scalar()
    assert sum(s.value for s in families["costlake_anomalies_open"]) == open_count == 3
    assert value(families, "costlake_anomalies_open", level="service", kind="spike") == 2

    # Budget burn: what the month to the mart's last day spent, in percent of the amount.
    labels = {"budget": "Platform", "period": "monthly", "currency": currency}
    assert value(families, "costlake_budget_burn_percent", **labels) == pytest.approx(float(spent) / 1000 * 100)
    assert value(families, "costlake_budget_amount", **labels) == 1000

    # Freshness: files are 5 days old against a 24 h expectation.
    assert value(families, "costlake_source_stale", source="file") == 1
    assert value(families, "costlake_source_expected_hours", source="file") == 24
    age = value(families, "costlake_source_data_age_hours", source="file")
    assert 4 * 24 - 1 < age < 5 * 24 + 1

    # The mart and the agent's audit.
    assert value(families, "costlake_mart_loads_total", status="succeeded") == 1
    assert value(families, "costlake_agent_questions_total", channel="chat") == 2
    assert value(families, "costlake_agent_failures_total", channel="chat") == 1
    assert value(families, "costlake_agent_questions_total", channel="mcp") == 1

    # Kafka: three messages on the topic, none in bronze.
    assert value(families, "costlake_kafka_consumer_lag_messages", topic=settings.kafka_topic_costs) == 3

    # Nothing failed to read; no secret or run id in the text.
    assert {s.value for s in families["costlake_metrics_collect_errors"] if s.name.endswith("_total")} == {0}
    assert WEBHOOK_SECRET not in body and "hooks.example" not in body
    with owner.connect() as conn:
        run_ids = list(conn.execute(sa.text("SELECT run_id FROM ops.pipeline_runs")).scalars())
    assert run_ids and not any(r in body for r in run_ids)
    assert "process_resident_memory_bytes" in families  # the process's own figures too


def test_a_failing_area_is_counted_and_the_rest_served(seeded, reader):
    settings, *_ = seeded

    def broken_lag() -> dict[str, int]:
        raise ConnectionError("broker unreachable")

    server = serve(reader, settings, port=0, kafka_lag=broken_lag)
    try:
        _, families = scrape(server.url)
        assert value(families, "costlake_metrics_collect_errors_total", area="kafka") == 1
        assert "costlake_kafka_consumer_lag_messages" not in families
        assert value(families, "costlake_pipeline_runs_total", trigger="manual", status="succeeded") == 1
    finally:
        server.stop()


def test_off_by_default_and_stopped_cleanly(tmp_path, settings, mart_url, reader):
    assert settings.metrics_port == 0 and settings.metrics_bind == "127.0.0.1"
    assert start_metrics(reader, settings) is None
    server = serve(reader, settings, port=0)
    url = server.url
    assert url.startswith("http://127.0.0.1:")
    scrape(url)
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_dashboard_uses_only_exported_metrics(endpoint):
    """Every series the Grafana dashboard queries is one the endpoint serves (names checked, not guessed)."""
    import re

    import yaml

    from backend.config import REPO_ROOT

    dashboard = json.loads((REPO_ROOT / "docker" / "grafana" / "costlake-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bcostlake_[a-z_]+", expr)}
    _, families = scrape(endpoint.url)
    served = {s.name for samples in families.values() for s in samples}
    assert len(used) > 20 and used <= served, sorted(used - served)
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {"${datasource}"}

    scrape_config = yaml.safe_load((REPO_ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape_config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]  # docker-compose's published default
