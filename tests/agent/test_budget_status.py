"""The agent's budget_status reads a subscription budget as the evaluator does (by subscription id) and shows names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from backend.agent.tools import _stored_members, budget_status_impl
from backend.analytics import budgets
from backend.mart import budgets_sql
from backend.sources.ids import canonical_subscription_id
from tests.agent.seed import AS_OF, SUBSCRIPTIONS
from tests.auth.principals import EDITOR


def _evaluator_spend(owner: sa.Engine, budget_id: int) -> float:
    """What backend/analytics/budgets.py measures for the budget's current period (the one that alerts)."""
    budget = budgets_sql.get_budget(owner, budget_id)
    start, end = budgets_sql.period_bounds(budget["period"], AS_OF)
    with owner.connect() as conn:
        return budgets.spend(conn, budget, start, min(AS_OF, end))


def _status_rows(ctx, name: str = "") -> dict[str, dict]:
    outcome = budget_status_impl(ctx, name=name)
    assert outcome.ok, outcome.summary
    return {r["budget"]: r for r in outcome.frame.to_dict("records")}


@contextmanager
def _budget(owner: sa.Engine, **values) -> Iterator[int]:
    """A budget added to the shared demo mart for one test, removed afterwards."""
    budget_id = budgets.create_budget(owner, actor=EDITOR, amount=1000, currency="EUR", period="monthly", **values)
    try:
        yield budget_id
    finally:
        budgets.delete_budget(owner, budget_id, actor=EDITOR)


def test_seed_names_subscription_budgets_by_their_id(owner):
    with owner.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT b.name, b.scope_value, s.subscription_name FROM mart.budgets b "
                "LEFT JOIN mart.dim_subscription s ON s.subscription_id = b.scope_value "
                "WHERE b.scope_type = 'subscription' ORDER BY b.name"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("Data Platform quarterly", SUBSCRIPTIONS["data"][0], "Data Platform"),
        ("Production", SUBSCRIPTIONS["prod"][0], "Production"),
    ]
    assert all(canonical_subscription_id(r.scope_value) == r.scope_value for r in rows)


def test_budget_status_spends_what_the_evaluator_measures_and_shows_the_subscription_name(rule_agent, owner):
    rows = _status_rows(rule_agent.ctx)
    ids = {b["name"]: b["budget_id"] for b in budgets_sql.list_budgets(owner)}
    assert set(rows) == set(ids)
    for name, row in rows.items():
        assert abs(row["spent"] - _evaluator_spend(owner, ids[name])) < 0.01, name
    assert rows["Production"]["scope"] == "subscription Production" and rows["Production"]["spent"] > 0
    assert rows["Data Platform quarterly"]["scope"] == "subscription Data Platform"


def test_a_budget_saved_from_the_budgets_page_shows_its_spend(rule_agent, owner):
    # The page takes a guid as the user copies it; the budgets code stores silver's spelling.
    guid = SUBSCRIPTIONS["dev"][0].removeprefix("/subscriptions/")
    with _budget(owner, name="Dev from the page", scope_type="subscription", scope_value=f"{{{guid.upper()}}}") as bid:
        # Asked by the subscription's name, as a user would.
        rows = _status_rows(rule_agent.ctx, name="Development")
        assert set(rows) == {"Dev from the page"}
        row = rows["Dev from the page"]
        assert row["scope"] == "subscription Development"
        assert row["spent"] > 0 and abs(row["spent"] - _evaluator_spend(owner, bid)) < 0.01


def test_a_subscription_budget_naming_no_subscription_id_is_flagged_not_guessed(rule_agent, owner):
    # A display name where the id belongs (stored before create_budget resolved names to ids) matches nothing
    # in the evaluator, so it never alerts: the agent says so.
    with owner.begin() as conn:
        bid = conn.execute(
            sa.text(
                "INSERT INTO mart.budgets (name, scope_type, scope_value, amount, currency, period)"
                " VALUES ('Legacy by name', 'subscription', 'Production', 1000, 'EUR', 'monthly') RETURNING budget_id"
            )
        ).scalar_one()
    try:
        row = _status_rows(rule_agent.ctx, name="Legacy")["Legacy by name"]
        assert row["spent"] == 0 == _evaluator_spend(owner, bid)
    finally:
        budgets.delete_budget(owner, bid, actor=EDITOR)
    assert row["scope"] == "subscription Production (no such subscription id)"


def test_a_subscription_budget_typed_by_name_is_stored_by_id_and_measured(rule_agent, owner):
    with _budget(owner, name="Prod by name", scope_type="subscription", scope_value="production") as bid:
        assert budgets_sql.get_budget(owner, bid)["scope_value"] == SUBSCRIPTIONS["prod"][0]
        row = _status_rows(rule_agent.ctx, name="Prod by name")["Prod by name"]
        assert row["spent"] > 0 and row["spent"] == round(_evaluator_spend(owner, bid), 2)


def test_the_agent_answers_how_the_production_budget_is_doing(rule_agent):
    answer = rule_agent.ask("How is the Production budget doing?")
    assert [c.tool for c in answer.tool_calls] == ["budget_status"]
    table = answer.last_table
    assert list(table["budget"]) == ["Production"]
    assert table.iloc[0]["scope"] == "subscription Production" and table.iloc[0]["spent"] > 0
    assert "Production (subscription Production" in answer.text


def test_subscription_members_map_to_the_ids_anomalies_and_forecasts_are_stored_under(rule_agent):
    assert _stored_members(rule_agent.ctx, "subscription", "Production") == [SUBSCRIPTIONS["prod"][0]]
    assert _stored_members(rule_agent.ctx, "service", "Storage") == ["Storage"]
