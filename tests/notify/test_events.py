"""What is sent, end to end through pipeline runs: abandoned runs, stale data, the anomaly digest, budget alerts."""

from __future__ import annotations

import json
import socket
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from backend.analytics import budgets
from backend.notify import events, hooks
from backend.notify.dispatch import dispatch
from tests.notify.conftest import deliveries
from tests.notify.test_delivery import BASE, _run, _settings

pytestmark = pytest.mark.slow


def _bodies(receiver, event: str) -> list[dict]:
    return [r.body for r in receiver.received if r.body.get("event") == event]


def test_an_abandoned_run_is_told_by_the_next_run(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url, notify_webhook_url=http_receiver.hook())
    with owner.begin() as conn:  # a run whose process died during silver (a pid that cannot exist)
        conn.execute(
            sa.text(
                "INSERT INTO ops.pipeline_runs (run_id, trigger, steps, status, started_at, host, pid)"
                " VALUES ('dead-run', 'schedule:pipeline-hourly', '[\"bronze\", \"silver\", \"gold\"]', 'running',"
                " now() - interval '1 hour', :h, 2147483000)"
            ),
            {"h": socket.gethostname()},
        )
        conn.execute(
            sa.text(
                "INSERT INTO ops.pipeline_steps (run_id, step, ordinal, status, started_at, finished_at) VALUES"
                " ('dead-run', 'bronze', 0, 'succeeded', now() - interval '1 hour', now() - interval '50 minutes'),"
                " ('dead-run', 'silver', 1, 'running', now() - interval '50 minutes', NULL),"
                " ('dead-run', 'gold', 2, 'pending', NULL, NULL)"
            )
        )
    assert _run(settings, owner, ["ok"]).status == "succeeded"
    (body,) = _bodies(http_receiver, "run_failed")
    assert body["title"] == "Pipeline run abandoned during step silver"
    assert body["data"] == {
        "run_id": "dead-run",
        "status": "abandoned",
        "step": "silver",
        "error": "process ended without finishing the run (killed or crashed)",
        "trigger": "schedule:pipeline-hourly",
    }
    assert body["url"] == f"{BASE}/pipeline?run=dead-run"
    _run(settings, owner, ["ok"])
    assert len(_bodies(http_receiver, "run_failed")) == 1  # told once


def test_a_run_stopped_by_a_shutdown_is_not_news(mart_settings, owner):
    run = {"run_id": "r", "status": "failed", "step": "silver", "step_error": "RunCancelledError: the app is shutting"}
    assert events.run_message(mart_settings, run) is None
    assert events.run_message(mart_settings, {**run, "status": "succeeded"}) is None


def _cursor(engine, source: str, scope: str, day: date) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.source_cursors (source, scope, metric, day, batch_id, fetched_at)"
                " VALUES (:s, :sc, 'file', :d, 'b', now())"
            ),
            {"s": source, "sc": scope, "d": day},
        )


def test_stale_data_is_told_once_per_episode(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url, notify_webhook_url=http_receiver.hook(), stale_after_hours_file=48)
    today = datetime.now(UTC).date()
    _cursor(owner, "file", "sha-1", today - timedelta(days=5))  # 4 days since the newest day ended: > 48 h
    _run(settings, owner, ["ok"])
    stale = {b["data"]["source"]: b for b in _bodies(http_receiver, "stale_data")}
    assert set(stale) >= {"file"}
    file_msg = stale["file"]
    assert file_msg["title"] == "Cost data is stale: file"
    assert file_msg["data"]["last_charge_day"] == (today - timedelta(days=5)).isoformat()
    assert file_msg["data"]["expected_hours"] == 48 and file_msg["data"]["age_hours"] > 48
    assert "expected within 48 h" in file_msg["text"]
    sent = len(_bodies(http_receiver, "stale_data"))

    _run(settings, owner, ["ok"])  # still stale, same newest day: nothing new
    assert len(_bodies(http_receiver, "stale_data")) == sent

    _cursor(owner, "file", "sha-2", today - timedelta(days=4))  # a newer day that is stale too: a new episode
    _run(settings, owner, ["ok"])
    newest = [b for b in _bodies(http_receiver, "stale_data") if b["data"]["source"] == "file"]
    assert [b["data"]["last_charge_day"] for b in newest] == [
        (today - timedelta(days=5)).isoformat(),
        (today - timedelta(days=4)).isoformat(),
    ]

    _cursor(owner, "file", "sha-3", today - timedelta(days=1))  # fresh again: no message
    before = len(_bodies(http_receiver, "stale_data"))
    _run(settings, owner, ["ok"])
    assert len([b for b in _bodies(http_receiver, "stale_data") if b["data"]["source"] == "file"]) == 2
    assert len(_bodies(http_receiver, "stale_data")) - before <= 1  # at most the mart's own lag


def _anomaly(conn, *, level, value, day, impact, metric="actual", status="open", contributors=(), currency="EUR"):
    return conn.execute(
        sa.text(
            "INSERT INTO mart.anomalies (level, dimension_value, metric, charge_date, expected, lower_bound,"
            " upper_bound, actual, impact, currency, severity, kind, method, contributors, status) VALUES"
            " (:l, :v, :m, :d, 100, 80, 120, 100 + :i, :i, :c, 6.0, CASE WHEN :i < 0 THEN 'drop' ELSE 'spike' END,"
            " 'robust_z', CAST(:co AS jsonb), :st) RETURNING anomaly_id"
        ),
        {"l": level, "v": value, "m": metric, "d": day, "i": impact, "c": currency, "co": json.dumps(list(contributors)),
         "st": status},
    ).scalar_one()  # fmt: skip


def test_one_digest_of_new_anomalies_by_cost_impact_never_repeated(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url, notify_webhook_url=http_receiver.hook(), notify_anomaly_max_items=2)
    day = date(2026, 11, 20)
    contributors = [
        {"dimension": "resource", "value": "vm-small", "expected": 1, "actual": 11, "delta": 10},
        {"dimension": "resource", "value": "vm-big", "expected": 10, "actual": 310, "delta": 300},
        {"dimension": "resource", "value": "disk", "expected": 5, "actual": 55, "delta": 50},
        {"dimension": "resource", "value": "ip", "expected": 1, "actual": 2, "delta": 1},
    ]
    with owner.begin() as conn:
        big = _anomaly(conn, level="service", value="Virtual Machines", day=day, impact=900, contributors=contributors)
        _anomaly(conn, level="service", value="Virtual Machines", day=day, impact=850, metric="amortized")
        drop = _anomaly(conn, level="subscription", value="/subscriptions/s1", day=day, impact=-400)
        _anomaly(conn, level="resource_group", value="rg-small", day=day, impact=20)
        _anomaly(conn, level="service", value="Storage", day=day, impact=5000, status="expected")  # judged
        _anomaly(conn, level="service", value="Old", day=day - timedelta(days=30), impact=9000)  # history
    _run(settings, owner, ["ok"])
    (digest,) = _bodies(http_receiver, "anomalies")
    assert digest["title"] == "3 new cost anomalies"
    assert [i["title"] for i in digest["items"]] == [
        "service Virtual Machines on 2026-11-20: +900.00 EUR",
        "subscription /subscriptions/s1 on 2026-11-20: -400.00 EUR",
    ]  # largest impact first, the amortized twin folded into its actual one, two listed
    assert "The 2 largest are listed; 1 more are on the Anomalies page." in digest["text"]
    first = digest["items"][0]
    assert first["url"] == f"{BASE}/anomalies?anomaly={big}"
    assert digest["items"][1]["url"] == f"{BASE}/anomalies?anomaly={drop}"
    assert first["lines"][1] == (
        "Top contributors: resource vm-big (+300.00 EUR), resource disk (+50.00 EUR), resource vm-small (+10.00 EUR)"
    )
    assert [c["value"] for c in digest["data"]["anomalies"][0]["contributors"]] == ["vm-big", "disk", "vm-small"]

    # The analytics writer re-inserts a rescored anomaly under a new id: it is the same anomaly, not news.
    with owner.begin() as conn:
        conn.execute(sa.text("DELETE FROM mart.anomalies WHERE anomaly_id = :id"), {"id": big})
        _anomaly(conn, level="service", value="Virtual Machines", day=day, impact=910, contributors=contributors)
    _run(settings, owner, ["ok"])
    assert len(_bodies(http_receiver, "anomalies")) == 1

    with owner.begin() as conn:
        _anomaly(conn, level="service", value="Bandwidth", day=day + timedelta(days=1), impact=75)
    _run(settings, owner, ["ok"])
    digests = _bodies(http_receiver, "anomalies")
    assert len(digests) == 2 and [i["title"] for i in digests[1]["items"]] == [
        "service Bandwidth on 2026-11-21: +75.00 EUR"
    ]


def test_a_daily_digest_waits_for_the_next_day(tmp_path, mart_url, owner, http_receiver):
    settings = _settings(tmp_path, mart_url, notify_webhook_url=http_receiver.hook(), notify_anomaly_digest="daily")
    day = date(2026, 11, 20)
    with owner.begin() as conn:
        _anomaly(conn, level="service", value="A", day=day, impact=100)
    now = datetime(2026, 11, 21, 8, tzinfo=UTC)
    assert events.queue_anomaly_digest(owner, settings, run_id="r1", now=now) is not None
    with owner.begin() as conn:
        _anomaly(conn, level="service", value="B", day=day, impact=200)
    assert events.queue_anomaly_digest(owner, settings, run_id="r2", now=now + timedelta(hours=3)) is None
    assert events.queue_anomaly_digest(owner, settings, run_id="r3", now=now + timedelta(days=1)) is not None
    dispatch(owner, settings, now=now + timedelta(days=1))
    assert [d["title"] for d in _bodies(http_receiver, "anomalies")] == ["1 new cost anomaly", "1 new cost anomaly"]


AGG_KEYS = ["billing_account_key", "subscription_key", "resource_group_key", "region_key", "service_key",
            "pricing_model_key", "charge_category_key", "currency_key", "source_key"]  # fmt: skip


@pytest.fixture
def spend(owner):
    """2025-06-01..10: 100 USD a day."""
    with owner.begin() as conn:
        conn.execute(sa.text("INSERT INTO mart.dim_currency (currency_key, currency_code) VALUES (1, 'USD')"))
        cols = ", ".join(AGG_KEYS)
        values = ", ".join("1" if k == "currency_key" else "0" for k in AGG_KEYS)
        for i in range(10):
            conn.execute(
                sa.text(
                    f"INSERT INTO mart.agg_cost_daily (charge_date, {cols}, actual_cost, amortized_cost, fact_rows)"
                    f" VALUES (:d, {values}, 100, 100, 1)"
                ),
                {"d": date(2025, 6, 1) + timedelta(days=i)},
            )
    return owner


def test_budget_alerts_reach_the_channels_and_the_budgets_own_webhook_across_runs(
    tmp_path, mart_url, spend, http_receiver
):
    settings = _settings(tmp_path, mart_url, notify_slack_webhook_url=http_receiver.hook("team-slack"),
                         notify_retries_in_run=0, notify_retry_backoff_s=0)  # fmt: skip
    with spend.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period,"
                " actual_thresholds, forecast_thresholds, webhook_url)"
                " VALUES ('Platform', 'total', '', 1500, 'USD', 'monthly', '{50}', '{}', :url)"
            ),
            {"url": http_receiver.hook("budget-own")},
        )
    http_receiver.script = [503, 503]  # both first POSTs fail
    stats = budgets.evaluate_budgets(spend, run_id="r1", retries=0, backoff=0.01, settings=settings)
    assert stats["alerts"] == 1
    assert (stats["webhooks_failed"], stats["notifications_failed"]) == (1, 1)
    assert {(r["channel"].split(":")[0], r["status"], r["attempts"]) for r in deliveries(spend)} == {
        ("settings", "retrying", 1),
        ("budget", "retrying", 1),
    }
    with spend.connect() as conn:  # the Budgets page's alert history says so
        alert = conn.execute(sa.text("SELECT webhook_status, webhook_attempts, webhook_error FROM mart.budget_alerts"))
        assert tuple(alert.one()) == ("failed", 1, "HTTP 503: no_service")

    hooks.before_run(spend, settings, abandoned=[])  # the next run retries first
    assert {(r["status"], r["attempts"]) for r in deliveries(spend)} == {("delivered", 2)}
    with spend.connect() as conn:
        alert = conn.execute(sa.text("SELECT webhook_status, webhook_attempts, webhook_error FROM mart.budget_alerts"))
        assert tuple(alert.one()) == ("delivered", 2, None)
    by_path = {r.path.rsplit("/", 1)[1]: r.body for r in http_receiver.received}
    own, team = by_path["budget-own"], by_path["team-slack"]
    # The budget's own webhook keeps the fields its receivers already read, beside the generic ones.
    assert own["budget"] == "Platform" and own["threshold_pct"] == 50 and own["currency"] == "USD"
    assert own["event"] == "budget_alert" and own["url"] == f"{BASE}/budgets"
    assert team["text"].startswith("Budget Platform reached 50%")
    assert budgets.evaluate_budgets(spend, run_id="r2", settings=settings)["alerts"] == 0  # alerted once
