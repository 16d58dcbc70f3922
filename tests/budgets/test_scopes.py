"""Budgets on real Postgres: resource groups per subscription (and their migration), filters on several
dimensions, currencies, the forecast's backtest error and the exceed date, in the store and in alerts."""

from __future__ import annotations

import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
import sqlalchemy as sa

from backend.analytics import budgets
from backend.config import Settings
from backend.mart import analytics, budgets_sql
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from backend.notify.events import budget_message
from tests.auth.principals import EDITOR
from tests.budgets.conftest import AS_OF, insert_dimensions

pytestmark = pytest.mark.slow  # a fresh migrated database per test

JUNE = {"amount": 100_000, "currency": "USD", "period": "monthly", "forecast_thresholds": []}


def _budget(engine, name: str, **values) -> dict:
    bid = budgets.create_budget(engine, actor=EDITOR, name=name, **{**JUNE, **values})
    return budgets_sql.get_budget(engine, bid)


def _spent(engine, budget: dict) -> float:
    with engine.connect() as conn:
        return budgets.spend(conn, budget, date(2025, 6, 1), AS_OF)


def test_0018_gives_a_resource_group_budget_its_one_subscription_and_asks_about_the_others(pg_url):
    upgrade(pg_url, "0017_savings")
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            insert_dimensions(conn, providers=False)
            conn.execute(
                sa.text(
                    "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period) VALUES"
                    " ('watchers', 'resource_group', 'NetworkWatcherRG', 100, 'USD', 'monthly'),"
                    " ('app', 'resource_group', 'app-rg', 100, 'USD', 'monthly'),"
                    " ('gone', 'resource_group', 'old-rg', 100, 'USD', 'monthly'),"
                    " ('storage', 'service', 'Storage', 100, 'USD', 'monthly')"
                )
            )
        upgrade(pg_url)
        with engine.connect() as conn:
            got = {
                r.name: (r.filters, r.scope_candidates)
                for r in conn.execute(sa.text("SELECT name, filters, scope_candidates FROM mart.budgets"))
            }
            # The reader sees the new columns through v_budgets (the agent's table).
            conn.execute(sa.text("SELECT filters, scope_candidates FROM mart.v_budgets")).all()
        assert got == {
            "app": ({"subscription": ["s-a"]}, None),  # one subscription has app-rg: that one
            "watchers": ({}, ["s-a", "s-b"]),  # in both: kept, and the user is asked
            "gone": ({}, []),  # in none loaded: kept, asked too
            "storage": ({}, None),  # not a resource group: unchanged
        }
    finally:
        engine.dispose()


def test_an_ambiguous_group_is_not_evaluated_until_its_subscription_is_picked(estate):
    with estate.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period, scope_candidates)"
                " VALUES ('watchers', 'resource_group', 'NetworkWatcherRG', 100, 'USD', 'monthly', '{s-a,s-b}')"
            )
        )
        bid = conn.execute(sa.text("SELECT budget_id FROM mart.budgets WHERE name = 'watchers'")).scalar_one()
    stats = budgets.evaluate_budgets(estate, run_id="r1", as_of=AS_OF)
    assert stats["budgets_need_subscription"] == 1 and stats["alerts"] == 0
    # Saving it again without a choice names the candidates; nothing changes.
    budgets.update_budget(estate, bid, actor=EDITOR, amount=150)  # the amount only: the scope stays as it is
    with pytest.raises(ValueError, match=r"exists in 2 subscriptions \(s-a, s-b\): pick the subscription"):
        budgets.update_budget(estate, bid, actor=EDITOR, scope_value="NetworkWatcherRG")
    assert budgets_sql.get_budget(estate, bid)["scope_candidates"] == ["s-a", "s-b"]
    budgets.update_budget(estate, bid, actor=EDITOR, filters={"subscription": ["Beta"]})  # by name: stored as id
    chosen = budgets_sql.get_budget(estate, bid)
    assert chosen["filters"] == {"subscription": ["s-b"]} and chosen["scope_candidates"] is None
    assert _spent(estate, chosen) == 20 * 20  # s-b's group only, not 30 a day across both
    stats = budgets.evaluate_budgets(estate, run_id="r2", as_of=AS_OF)
    # 400 of 150: the default thresholds 50, 80, 100 % on actual spend and 100 % on the forecast.
    assert stats["budgets_need_subscription"] == 0 and stats["alerts"] == 4


def test_a_new_resource_group_budget_gets_its_subscription_or_is_asked_for_it(estate):
    app = _budget(estate, "app", scope_type="resource_group", scope_value="app-rg")
    assert app["filters"] == {"subscription": ["s-a"]}  # the only subscription with app-rg
    with pytest.raises(ValueError, match=r"NetworkWatcherRG' exists in 2 subscriptions \(s-a, s-b\)"):
        _budget(estate, "watchers", scope_type="resource_group", scope_value="NetworkWatcherRG")
    with pytest.raises(ValueError, match="names one subscription"):
        _budget(
            estate, "two", scope_type="resource_group", scope_value="app-rg", filters={"subscription": ["s-a", "s-b"]}
        )
    watchers = _budget(
        estate, "watchers", scope_type="resource_group", scope_value="NetworkWatcherRG", filters={"subscription": "s-a"}
    )
    assert _spent(estate, watchers) == 10 * 20


def test_every_filter_holds_and_only_the_budget_currency_counts(estate):
    cases = {
        # subscription + service: s-a's Compute in USD (its EUR cost of 1000 a day is another currency)
        "sub+service": ({"scope_type": "subscription", "scope_value": "s-a", "filters": {"service": ["Compute"]}}, 30),
        "provider": ({"scope_type": "total", "filters": {"provider": ["AWS"]}}, 40),
        "provider+region": ({"scope_type": "total", "filters": {"provider": ["Microsoft"], "region": ["eastus"]}}, 20),
        "service, two values": ({"scope_type": "total", "filters": {"service": ["Storage", "Compute"]}}, 100),
        # tag + region reads the fact (resources r3 westeurope and r4 eastus carry env=prod)
        "tag+region": ({"scope_type": "tag", "tag_key": "env", "scope_value": "prod", "filters": {"region": ["westeurope"]}}, 30),
        "tag": ({"scope_type": "total", "filters": {"tag:env": ["prod"]}}, 70),
        "scope and filter disagree": ({"scope_type": "service", "scope_value": "Storage", "filters": {"service": ["Compute"]}}, 0),
    }  # fmt: skip
    for name, (values, per_day) in cases.items():
        budget = _budget(estate, name, **values)
        assert _spent(estate, budget) == per_day * 20, name
        assert [p.cost for p in analytics.budget_burn(estate, budget, as_of=AS_OF)] == [per_day] * 20 * bool(per_day)
    eur = _budget(estate, "eur", scope_type="subscription", scope_value="s-a", currency="EUR")
    assert _spent(estate, eur) == 1000 * 20
    with pytest.raises(ValueError, match="a budget filters on subscription, service, region, provider, tag:<key>"):
        _budget(estate, "bad", scope_type="total", filters={"meter": ["x"]})


def test_outlook_stores_backtest_error_window_and_exceed_date(estate):
    """s-a's NetworkWatcherRG costs 10 a day from March 1st: 200 spent by June 20th, 300 by the month's end."""
    common = {"scope_type": "resource_group", "scope_value": "NetworkWatcherRG", "filters": {"subscription": ["s-a"]}}
    ids = {
        name: _budget(estate, name, amount=amount, **common)["budget_id"]
        for name, amount in (("exceeds", 250), ("fits", 1000), ("over", 150))
    }
    budgets.evaluate_budgets(estate, run_id="r1", as_of=AS_OF)
    got = analytics.budget_forecasts(estate)
    fits = got[ids["fits"]]
    assert float(fits.spent) == 200 and float(fits.forecast_total) == pytest.approx(300)
    assert fits.exceed_date is None  # not expected this period
    # A constant series is forecast exactly: MAPE 0 over six weekly origins of the 10 days left in June, the
    # earliest starting 10 + 35 days before the end of the 112 days of history.
    assert fits.backtest_metric == "mape_10d_total" and float(fits.backtest_error) == pytest.approx(0)
    assert (fits.backtest_start, fits.backtest_end) == (date(2025, 5, 7), AS_OF)
    assert got[ids["exceeds"]].exceed_date == date(2025, 6, 25)  # 250 reached on the 25th
    assert got[ids["over"]].exceed_date == date(2025, 6, 15)  # already passed: the day it was


def test_a_budget_on_one_analytics_series_shows_that_forecast_and_its_stored_backtest(estate):
    """A subscription budget without filters is the analytics step's subscription series: its stored forecast
    (as the Overview shows it) and the backtest error stored with it, over the window that error covers."""
    with estate.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mart.forecasts (scope_type, scope_value, metric, forecast_date, point, method, currency,"
                " backtest_metric, backtest_error, generated_at)"
                " SELECT 'subscription', 's-a', 'actual', d, 50, 'ets', 'USD', 'mape_30d_total', 0.123, now()"
                " FROM generate_series(DATE '2025-06-21', DATE '2025-07-20', interval '1 day') d"
            )
        )
    budget = _budget(estate, "alpha", amount=1000, scope_type="subscription", scope_value="s-a")
    budgets.evaluate_budgets(estate, run_id="r1", as_of=AS_OF)
    view = analytics.budget_forecasts(estate)[budget["budget_id"]]
    # s-a spends 40 a day in USD: 800 by June 20th, then the stored 50 a day for the 10 days left.
    assert float(view.spent) == 800 and float(view.forecast_total) == 1300 and view.method == "ets"
    assert float(view.backtest_error) == pytest.approx(0.123) and view.backtest_metric == "mape_30d_total"
    # Six weekly origins of 30-day totals, the last ending on the day before the first forecast day.
    assert (view.backtest_start, view.backtest_end) == (date(2025, 4, 17), AS_OF)
    assert view.exceed_date == date(2025, 6, 24)


def test_a_short_history_projects_the_run_rate_without_a_backtest(estate):
    # On March 20th the mart holds 20 days: too short to forecast (28), so the run rate says when.
    budget = _budget(estate, "early", amount=250, scope_type="resource_group", scope_value="NetworkWatcherRG",
                     filters={"subscription": ["s-a"]})  # fmt: skip
    budgets.evaluate_budgets(estate, run_id="r1", as_of=date(2025, 3, 20))
    view = analytics.budget_forecasts(estate)[budget["budget_id"]]
    assert view.method == "run_rate" and view.forecast_total is None and view.backtest_error is None
    assert float(view.spent) == 200 and view.exceed_date == date(2025, 3, 25)


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_alert_carries_the_exceed_date_and_the_backtest(estate):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Receiver.received = []
        _budget(estate, "watch", amount=250, scope_type="resource_group", scope_value="NetworkWatcherRG",
                filters={"subscription": ["s-a"]}, actual_thresholds=[50], forecast_thresholds=[100],
                webhook_url=f"http://127.0.0.1:{server.server_port}/hook")  # fmt: skip
        stats = budgets.evaluate_budgets(estate, run_id="r1", as_of=AS_OF, http_post=requests.post, backoff=0.01)
    finally:
        server.shutdown()
        server.server_close()
    assert stats["alerts"] == 2
    by_kind = {a["threshold_type"]: a for a in _Receiver.received}
    assert by_kind["forecast"]["exceed_date"] == "2025-06-25" and by_kind["forecast"]["amount"] == pytest.approx(300)
    assert by_kind["actual"]["backtest_error"] == pytest.approx(0)
    assert by_kind["actual"]["backtest_window"] == "2025-05-07..2025-06-20"
    assert by_kind["actual"]["filters"] == {"subscription": ["s-a"]}
    # The notification channels' message says it too.
    facts = dict(budget_message(Settings.model_construct(), by_kind["forecast"]).facts)
    assert facts["Exceeds on"] == "2025-06-25" and facts["Filters"] == "subscription s-a"
    assert facts["Forecast error"] == "MAPE 0.0% (backtest 2025-05-07..2025-06-20)"
    assert (
        dict(budget_message(Settings.model_construct(), {**by_kind["forecast"], "exceed_date": None}).facts)[
            "Exceeds on"
        ]
        == "not expected this period"
    )
