"""Budgets against a real Postgres mart: CRUD, thresholds on actual and forecast, alert once, webhook retries."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
import sqlalchemy as sa

from backend.analytics import budgets
from backend.mart import budgets_sql
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from tests.auth.principals import EDITOR

pytestmark = pytest.mark.slow  # a fresh migrated database per test

AGG_KEYS = [
    "billing_account_key",
    "subscription_key",
    "resource_group_key",
    "region_key",
    "service_key",
    "pricing_model_key",
    "charge_category_key",
    "currency_key",
    "source_key",
]


@pytest.fixture
def mart(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO mart.dim_currency (currency_key, currency_code) VALUES (1, 'USD')"))
        conn.execute(sa.text("INSERT INTO mart.dim_subscription (subscription_key, subscription_id) VALUES (1, 's1')"))
        cols = ", ".join(AGG_KEYS)
        for i in range(10):  # 2025-06-01 .. 06-10: 100 a day on s1
            values = ", ".join("1" if k in ("subscription_key", "currency_key") else "0" for k in AGG_KEYS)
            conn.execute(
                sa.text(
                    f"INSERT INTO mart.agg_cost_daily (charge_date, {cols}, actual_cost, amortized_cost, fact_rows)"
                    f" VALUES (:d, {values}, 100, 90, 1)"
                ),
                {"d": date(2025, 6, 1) + timedelta(days=i)},
            )
        # A forecast of 100 a day for the rest of June, as run_analytics writes it (in the scope's currency).
        for i in range(20):
            conn.execute(
                sa.text(
                    "INSERT INTO mart.forecasts (scope_type, scope_value, metric, forecast_date, point, method,"
                    " currency, generated_at) VALUES ('subscription', 's1', 'actual', :d, 100, 'seasonal_mean',"
                    " 'USD', now())"
                ),
                {"d": date(2025, 6, 11) + timedelta(days=i)},
            )
    yield engine
    engine.dispose()


class Receiver(BaseHTTPRequestHandler):
    fail_first = 0
    received: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        status = 503 if len(type(self).received) <= type(self).fail_first else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    Receiver.fail_first = 2
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Receiver
    server.shutdown()
    server.server_close()


def test_crud_and_validation(mart):
    bid = budgets.create_budget(
        mart,
        actor=EDITOR,
        name="sub",
        scope_type="subscription",
        scope_value="s1",
        amount=1000,
        currency="USD",
        period="monthly",
    )
    budgets.update_budget(mart, bid, actor=EDITOR, amount=2500, actual_thresholds=[100, 50])
    got = budgets_sql.get_budget(mart, bid)
    assert float(got["amount"]) == 2500 and [float(t) for t in got["actual_thresholds"]] == [50, 100]
    assert [b["name"] for b in budgets_sql.list_budgets(mart)] == ["sub"]
    with pytest.raises(ValueError):
        budgets.create_budget(
            mart, actor=EDITOR, name="bad", scope_type="tag", amount=1, currency="USD", period="monthly"
        )
    with pytest.raises(LookupError):
        budgets.update_budget(mart, 999, actor=EDITOR, amount=1)
    budgets.delete_budget(mart, bid, actor=EDITOR)
    assert budgets_sql.get_budget(mart, bid) is None


def test_subscription_scope_is_stored_as_silver_spells_it(mart):
    guid = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    arm = f"/subscriptions/{guid}"
    with mart.begin() as conn:  # the mart's subscription as silver now writes it
        conn.execute(
            sa.text("UPDATE mart.dim_subscription SET subscription_id = :s WHERE subscription_key = 1"), {"s": arm}
        )
    bid = budgets.create_budget(
        mart,
        actor=EDITOR,
        name="typed",
        scope_type="subscription",
        scope_value=f"{{{guid.upper()}}}",
        amount=1500,
        currency="USD",
        period="monthly",
        actual_thresholds=[50],
        forecast_thresholds=[],
    )
    assert budgets_sql.get_budget(mart, bid)["scope_value"] == arm
    # Spent 1000 of 1500 on that subscription: the typed guid found it.
    assert budgets.evaluate_budgets(mart, run_id="r1", as_of=date(2025, 6, 10))["alerts"] == 1
    # An edit that sends only the value: the stored scope decides.
    budgets.update_budget(mart, bid, actor=EDITOR, scope_value=f"{arm.upper()}/resourceGroups/RG")
    assert budgets_sql.get_budget(mart, bid)["scope_value"] == arm
    other = budgets.create_budget(
        mart,
        actor=EDITOR,
        name="svc",
        scope_type="service",
        scope_value=guid.upper(),
        amount=1,
        currency="USD",
        period="monthly",
    )
    budgets.update_budget(mart, other, actor=EDITOR, scope_value=f" {guid.upper()} ")
    assert budgets_sql.get_budget(mart, other)["scope_value"] == f" {guid.upper()} "  # not a subscription: as given


def test_period_bounds():
    assert budgets_sql.period_bounds("monthly", date(2025, 2, 10)) == (date(2025, 2, 1), date(2025, 2, 28))
    assert budgets_sql.period_bounds("quarterly", date(2025, 11, 5)) == (date(2025, 10, 1), date(2025, 12, 31))
    assert budgets_sql.period_bounds("yearly", date(2025, 6, 1)) == (date(2025, 1, 1), date(2025, 12, 31))


def test_evaluate_alerts_once_and_delivers_webhook_with_retries(mart, receiver):
    url, handler = receiver
    # Spent 1000 of 1500 (66%: crosses 50); forecast 3000 (200%: crosses forecast 100).
    budgets.create_budget(
        mart,
        actor=EDITOR,
        name="s1 june",
        scope_type="subscription",
        scope_value="s1",
        amount=1500,
        currency="USD",
        period="monthly",
        actual_thresholds=[50, 80, 100],
        forecast_thresholds=[100],
        webhook_url=url,
    )
    stats = budgets.evaluate_budgets(mart, run_id="r1", http_post=requests.post, retries=3, backoff=0.01)
    assert stats["alerts"] == 2 and stats["webhooks_delivered"] == 2 and stats["webhooks_failed"] == 0
    with mart.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT threshold_type, threshold_pct, webhook_status, webhook_attempts, "
                "amount_at_alert FROM mart.budget_alerts ORDER BY alert_id"
            )
        ).all()
    assert [(r[0], float(r[1]), r[2]) for r in rows] == [("actual", 50, "delivered"), ("forecast", 100, "delivered")]
    assert rows[0][3] == 3  # two 503s, then delivered
    assert float(rows[0][4]) == 1000 and float(rows[1][4]) == 3000
    assert handler.received[-1]["threshold_type"] == "forecast" and handler.received[-1]["currency"] == "USD"
    # The next run finds the same thresholds crossed: no new alert, no new POST.
    posts = len(handler.received)
    assert budgets.evaluate_budgets(mart, run_id="r2", http_post=requests.post, backoff=0.01)["alerts"] == 0
    assert len(handler.received) == posts


def test_webhook_gives_up_and_records_failure(mart, receiver):
    url, handler = receiver
    handler.fail_first = 100
    budgets.create_budget(
        mart,
        actor=EDITOR,
        name="total",
        scope_type="total",
        amount=100,
        currency="USD",
        period="monthly",
        actual_thresholds=[100],
        forecast_thresholds=[],
        webhook_url=url,
    )
    stats = budgets.evaluate_budgets(mart, run_id="r1", retries=2, backoff=0.01)
    assert stats["webhooks_failed"] == 1
    with mart.connect() as conn:
        status, attempts, error = conn.execute(
            sa.text("SELECT webhook_status, webhook_attempts, webhook_error FROM mart.budget_alerts")
        ).one()
    assert (status, attempts, error) == ("failed", 3, "HTTP 503")


def test_a_subscription_typed_by_name_is_stored_as_its_id(mart):
    with mart.begin() as conn:
        conn.execute(
            sa.text("UPDATE mart.dim_subscription SET subscription_name = 'Production' WHERE subscription_key = 1")
        )
        conn.execute(
            sa.text(
                "INSERT INTO mart.dim_subscription (subscription_key, subscription_id, subscription_name)"
                " VALUES (2, 's2', 'Shared'), (3, 's3', 'Shared')"
            )
        )
    common = {
        "scope_type": "subscription",
        "amount": 1500,
        "currency": "USD",
        "period": "monthly",
        "forecast_thresholds": [],
    }
    bid = budgets.create_budget(
        mart, actor=EDITOR, name="prod", scope_value=" production ", actual_thresholds=[50], **common
    )
    assert budgets_sql.get_budget(mart, bid)["scope_value"] == "s1"
    assert budgets.evaluate_budgets(mart, run_id="r1", as_of=date(2025, 6, 10))["alerts"] == 1
    with pytest.raises(ValueError, match="2 subscriptions are named 'Shared'; enter the subscription id"):
        budgets.create_budget(mart, actor=EDITOR, name="shared", scope_value="Shared", **common)
    with pytest.raises(ValueError, match=r"no subscription has the id or name 'Prod' \(known: Production, Shared\)"):
        budgets.update_budget(mart, bid, actor=EDITOR, scope_value="Prod")
    budgets.update_budget(mart, bid, actor=EDITOR, scope_value="s3")  # an id is taken as it is
    assert budgets_sql.get_budget(mart, bid)["scope_value"] == "s3"


def test_a_subscription_budget_made_before_any_cost_is_kept_as_typed(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        bid = budgets.create_budget(
            engine,
            actor=EDITOR,
            name="early",
            scope_type="subscription",
            scope_value="Production",
            amount=10,
            currency="USD",
            period="monthly",
        )
        assert budgets_sql.get_budget(engine, bid)["scope_value"] == "Production"
    finally:
        engine.dispose()


def test_a_budget_counts_only_cost_and_forecasts_in_its_own_currency(mart):
    """s1 also bills in EUR (much more than in USD), with EUR forecasts: a USD budget sees its USD spend and
    forecast only, a EUR budget its EUR ones, and one in a currency the scope has no cost in cannot alert."""
    with mart.begin() as conn:
        conn.execute(sa.text("INSERT INTO mart.dim_currency (currency_key, currency_code) VALUES (2, 'EUR')"))
        cols = ", ".join(AGG_KEYS)
        values = ", ".join("2" if k == "currency_key" else "1" if k == "subscription_key" else "0" for k in AGG_KEYS)
        for i in range(10):  # 5000 a day in EUR on s1, next to the fixture's 100 a day in USD
            conn.execute(
                sa.text(
                    f"INSERT INTO mart.agg_cost_daily (charge_date, {cols}, actual_cost, amortized_cost, fact_rows)"
                    f" VALUES (:d, {values}, 5000, 5000, 1)"
                ),
                {"d": date(2025, 6, 1) + timedelta(days=i)},
            )
        for i in range(20):  # EUR's forecast is a later generation than USD's: it must still not count for USD
            conn.execute(
                sa.text(
                    "INSERT INTO mart.forecasts (scope_type, scope_value, metric, forecast_date, point, method,"
                    " currency, generated_at) VALUES ('subscription', 's1', 'actual', :d, 5000, 'seasonal_mean',"
                    " 'EUR', now() + interval '1 second')"
                ),
                {"d": date(2025, 6, 11) + timedelta(days=i)},
            )
    common = {"scope_type": "subscription", "scope_value": "s1", "period": "monthly"}
    # USD: spent 1000, forecast 3000 of 2500 -> actual 40% (no alert), forecast 120% (alerts). With EUR added
    # it would be 51000 spent and 153000 forecast: every threshold.
    usd = budgets.create_budget(
        mart, actor=EDITOR, name="usd", amount=2500, currency="USD", actual_thresholds=[50], **common
    )
    # EUR: spent 50000 of 100000 (50%), forecast 150000 (150%).
    budgets.create_budget(
        mart, actor=EDITOR, name="eur", amount=100_000, currency="EUR", actual_thresholds=[50, 80], **common
    )
    budgets.create_budget(mart, actor=EDITOR, name="gbp", amount=10, currency="GBP", actual_thresholds=[1], **common)
    stats = budgets.evaluate_budgets(mart, run_id="r1", as_of=date(2025, 6, 10))
    assert stats["budgets_other_currency"] == 1  # gbp: s1 has no GBP cost, nothing is converted
    with mart.connect() as conn:
        alerts = conn.execute(
            sa.text(
                "SELECT budget_name, threshold_type, threshold_pct, amount_at_alert, currency FROM mart.budget_alerts"
                " ORDER BY budget_name, threshold_type, threshold_pct"
            )
        ).all()
    assert [(a[0], a[1], float(a[2]), float(a[3]), a[4]) for a in alerts] == [
        ("eur", "actual", 50.0, 50_000.0, "EUR"),
        ("eur", "forecast", 100.0, 150_000.0, "EUR"),
        ("usd", "forecast", 100.0, 3000.0, "USD"),
    ]
    with mart.connect() as conn:
        scope = budgets_sql.get_budget(mart, usd)
        assert budgets.scope_currencies(conn, scope, date(2025, 6, 1), date(2025, 6, 10)) == ["EUR", "USD"]
