"""The Budgets page run headlessly (AppTest) on a seeded mart: the outlook (forecast, backtest error with its
window, exceed date), a multi-dimension budget saved from the form, and an ambiguous resource group asked back."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.analytics import budgets
from backend.mart import analytics, budgets_sql
from tests.ui.conftest import app_runtime, app_server, page, pipeline, seeded, texts, ui_settings  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(300)


def _metric(at, label: str):
    return next(m for m in at.metric if m.label == label)


def test_budgets_page_shows_backtest_error_and_exceed_date(seeded, pipeline):  # noqa: F811
    engine = pipeline.engine
    budgets.evaluate_budgets(engine, run_id="r1", as_of=seeded["as_of"])
    view = next(iter(analytics.budget_forecasts(engine).values()))  # 'Platform', the seeded total budget
    assert view.backtest_error is not None  # 60 days of history: backtested
    at = page("budgets").run()
    assert not at.exception and [e.value for e in at.error] == []
    error = _metric(at, "Forecast error")
    assert error.value == f"MAPE {float(view.backtest_error):.1%}"
    assert f"Backtest {view.backtest_start} – {view.backtest_end}" in error.proto.help
    exceed = _metric(at, "Expected to exceed").value
    if view.exceed_date is None:
        assert exceed == "not expected this period"
    elif view.exceed_date <= view.as_of:
        assert exceed == f"exceeded on {view.exceed_date}"
    else:
        assert exceed == str(view.exceed_date)


def test_a_budget_with_filters_is_saved_from_the_form(seeded, pipeline):  # noqa: F811
    with pipeline.engine.connect() as conn:
        service = conn.execute(sa.text("SELECT service_name FROM mart.dim_service WHERE service_name <> '' LIMIT 1"))
        service = service.scalar_one()
        region = conn.execute(sa.text("SELECT region FROM mart.dim_region WHERE region <> '' LIMIT 1")).scalar_one()
    at = page("budgets").run()
    at.text_input(key="bf_name_new").set_value("Filtered")
    at.number_input(key="bf_amount_new").set_value(900.0)
    at.multiselect(key="bf_f_service_new").select(service)
    at.multiselect(key="bf_f_region_new").select(region)
    at.text_input(key="bf_f_tagkey_new").set_value("env")
    at.text_input(key="bf_f_tagvalues_new").set_value("prod, test")
    next(b for b in at.button if b.label == "Create budget").click().run()
    assert not at.exception and [e.value for e in at.error] == []
    saved = next(b for b in budgets_sql.list_budgets(pipeline.engine) if b["name"] == "Filtered")
    assert saved["filters"] == {"service": [service], "region": [region], "tag:env": ["prod", "test"]}
    assert f"service = {service}" in texts(at)


def test_an_ambiguous_resource_group_is_asked_back(seeded, pipeline):  # noqa: F811
    with pipeline.engine.begin() as conn:
        subs = list(
            conn.execute(
                sa.text("SELECT subscription_id FROM mart.dim_subscription WHERE subscription_id <> '' ORDER BY 1")
            ).scalars()
        )[:2]
        conn.execute(
            sa.text(
                "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period, scope_candidates)"
                " VALUES ('Watchers', 'resource_group', 'NetworkWatcherRG', 100, 'EUR', 'monthly', :c)"
            ),
            {"c": subs},
        )
        bid = conn.execute(sa.text("SELECT budget_id FROM mart.budgets WHERE name = 'Watchers'")).scalar_one()
    at = page("budgets").run()
    assert not at.exception
    assert any("NetworkWatcherRG" in w.value and "pick the one this budget is for" in w.value for w in at.warning)
    pick = at.selectbox(key=f"bf_pick_{bid}")
    assert pick.options and len(pick.options) == 2  # the candidates, shown by name and id
    pick.set_value(subs[1])
    next(b for b in at.button if b.label == "Use this subscription").click().run()
    assert not at.exception
    chosen = budgets_sql.get_budget(pipeline.engine, bid)
    assert chosen["filters"] == {"subscription": [subs[1]]} and chosen["scope_candidates"] is None
    assert not any("NetworkWatcherRG" in w.value for w in at.warning)
