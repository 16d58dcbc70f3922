"""The agent end to end on the seeded mart: scripted fake LLMs and the rule-based model, real SQL, real audit rows."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from backend.agent.agent import AgentAnswer
from backend.agent.rules import RuleBasedChatModel
from tests.agent.conftest import scripted, tool_call


def _audit(owner, session_id):
    with owner.connect() as conn:
        return (
            conn.execute(
                sa.text("SELECT * FROM mart.agent_audit WHERE session_id = :s ORDER BY audit_id"), {"s": session_id}
            )
            .mappings()
            .all()
        )


def test_scripted_llm_tool_calls_run_for_real_and_are_audited(make_agent, owner):
    model = scripted(
        [tool_call("cost_breakdown", dimension="service", period="2025-03", top_n=3)],
        [
            tool_call(
                "run_sql",
                sql="SELECT sum(actual_cost) AS total FROM mart.v_cost_monthly WHERE charge_month = '2025-03-01'",
            )
        ],
        "Virtual Machines led March.",
    )
    agent = make_agent(model)
    session = uuid.uuid4().hex
    answer = agent.ask("top services in March?", session_id=session, user_name="tester")
    assert answer.text == "Virtual Machines led March." and answer.error is None
    assert [c.tool for c in answer.tool_calls] == ["cost_breakdown", "run_sql"]
    assert all(c.ok for c in answer.tool_calls)
    breakdown = answer.results[0].frame
    assert list(breakdown["service"]) == ["Virtual Machines", "Azure SQL Database", "Storage"]
    total = float(answer.results[1].frame["total"][0])
    with owner.connect() as conn:
        expected = conn.execute(
            sa.text(
                "SELECT sum(actual_cost) FROM mart.fact_cost_daily WHERE charge_date BETWEEN '2025-03-01' AND '2025-03-31'"
            )
        ).scalar()
    assert total == pytest.approx(float(expected))
    # The model saw the tool results (the second model call got the breakdown's rows).
    assert "Virtual Machines" in str(model.seen[1][-1].content)

    rows = _audit(owner, session)
    assert len(rows) == 1
    row = rows[0]
    assert row["question"] == "top services in March?" and row["user_name"] == "tester"
    assert row["answer"] == answer.text and row["model"]
    assert [c["tool"] for c in row["tool_calls"]] == ["cost_breakdown", "run_sql"]
    assert row["tool_calls"][0]["args"]["period"] == "2025-03"
    statements = [s["sql"] for s in row["sql_statements"]]
    assert any("FROM mart.v_cost_monthly" in s and s.endswith("LIMIT 1000") for s in statements)
    assert any("mart.agg_cost_daily" in s for s in statements)  # the mart query functions' SQL is captured too
    assert row["row_count"] == 4 and row["duration_ms"] >= 0 and row["error"] is None


def test_tool_errors_go_back_to_the_model_which_can_recover(make_agent):
    model = scripted(
        [tool_call("run_sql", sql="DELETE FROM mart.anomalies")],
        [tool_call("run_sql", sql="SELECT count(*) AS n FROM mart.anomalies")],
        "There are 3 anomalies.",
    )
    answer = make_agent(model).ask("how many anomalies?", session_id="recover")
    assert [c.ok for c in answer.tool_calls] == [False, True]
    assert "DELETE is not allowed" in str(model.seen[1][-1].content) or "only SELECT" in str(model.seen[1][-1].content)
    assert int(answer.last_table["n"][0]) == 3


def test_model_call_limit_stops_a_looping_model(make_agent):
    looping = scripted([tool_call("list_tables")])  # asks for the same tool forever
    answer = make_agent(looping).ask("loop", session_id="loop")
    assert len(looping.seen) <= 8
    assert len(answer.tool_calls) <= 8


def test_rule_based_agent_answers_and_streams(rule_agent, owner):
    assert isinstance(rule_agent.model, RuleBasedChatModel) and not rule_agent.uses_llm
    session = uuid.uuid4().hex
    events = list(rule_agent.stream("Why did storage cost jump last Tuesday?", session_id=session))
    assert isinstance(events[-1], AgentAnswer)
    text = "".join(e for e in events if isinstance(e, str))
    answer = events[-1]
    assert text.strip() == answer.text
    assert "2025-04-22" in answer.text and "stlogsprod" in answer.text
    assert answer.last_table.iloc[0]["resource"] == "stlogsprod"
    assert _audit(owner, session)[0]["tool_calls"][0]["tool"] == "explain_cost_change"


def test_time_series_results_are_marked_for_a_chart(rule_agent):
    answer = rule_agent.ask("daily cost for the last 14 days")
    result = answer.results[0]
    assert result.chart and len(result.frame) == 14


def test_unknown_question_is_audited_without_tool_calls(rule_agent, owner):
    session = uuid.uuid4().hex
    answer = rule_agent.ask("tell me a joke", session_id=session)
    assert not answer.tool_calls and "Examples" in answer.text
    row = _audit(owner, session)[0]
    assert row["tool_calls"] == [] and json.loads(json.dumps(row["sql_statements"])) == []
