"""The agent over the wire: langchain-openai against a local OpenAI-compatible server, tool calls, prose, SQL in prose, errors."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import sqlalchemy as sa

from backend.agent import grounding
from backend.agent.agent import AgentAnswer, default_user
from backend.config import Settings
from tests.agent.conftest import TIMEOUT_MS
from tests.agent.fake_openai import Call, error, slow, tools
from tests.agent.seed import agent_on
from tests.agent.test_attacks import HEAVY, QUOTING
from tests.agent.test_sqlguard import BAD

APRIL_TOTAL_SQL = (
    "SELECT sum(actual_cost) FROM mart.v_cost_daily_summary WHERE charge_date BETWEEN '2025-04-01' AND '2025-04-27'"
)
INVENTED = "12,345.67"


def _total(owner, sql: str = APRIL_TOTAL_SQL) -> float:
    with owner.connect() as conn:
        return float(conn.execute(sa.text(sql)).scalar())


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _audit(owner, session_id):
    with owner.connect() as conn:
        return (
            conn.execute(
                sa.text("SELECT * FROM mart.agent_audit WHERE session_id = :s ORDER BY audit_id"), {"s": session_id}
            )
            .mappings()
            .one()
        )


def test_tool_calls_over_the_wire_in_the_real_format(llm_server, llm_agent, owner):
    llm_server.script(
        tools(("cost_breakdown", {"dimension": "service", "period": "2025-03", "top_n": 3})),
        "Virtual Machines led March.",
    )
    agent = llm_agent()
    session = uuid.uuid4().hex
    events = list(agent.stream("top services in March?", session_id=session, user_name="alice"))
    answer = events[-1]
    assert isinstance(answer, AgentAnswer) and answer.error is None
    assert answer.text == "Virtual Machines led March." and answer.answered_by == grounding.MODEL
    assert "".join(e for e in events if isinstance(e, str)) == answer.text  # streamed once grounded
    assert [(c.tool, c.ok, c.via) for c in answer.tool_calls] == [("cost_breakdown", True, "model")]
    assert list(answer.last_table["service"]) == ["Virtual Machines", "Azure SQL Database", "Storage"]

    first, second = llm_server.requests
    assert first["model"] == llm_server.model and first["stream"] is True
    assert first["messages"][0]["role"] == "system" and first["messages"][-1] == {
        "role": "user",
        "content": "top services in March?",
    }
    names = {t["function"]["name"] for t in first["tools"]}
    assert {"run_sql", "cost_breakdown", "forecast", "untagged_share"} <= names
    breakdown = next(t["function"] for t in first["tools"] if t["function"]["name"] == "cost_breakdown")
    assert breakdown["parameters"]["properties"]["top_n"]["type"] == "integer"
    # The first step must call a tool; once a tool has answered, the model may reply.
    assert first["tool_choice"] == "required" and "tool_choice" not in second
    call_msg, tool_msg = second["messages"][-2:]
    assert call_msg["role"] == "assistant" and call_msg["content"] == ""  # never null: llama.cpp refuses it
    assert call_msg["tool_calls"][0]["function"]["name"] == "cost_breakdown"
    assert json.loads(call_msg["tool_calls"][0]["function"]["arguments"])["period"] == "2025-03"
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == call_msg["tool_calls"][0]["id"]
    assert "Virtual Machines" in tool_msg["content"]
    assert llm_server.refused == []

    row = _audit(owner, session)
    assert row["user_name"] == "alice" and row["model"] == llm_server.model
    assert row["tool_calls"][0]["via"] == "model"


def test_settings_from_the_environment_choose_the_openai_compatible_model(
    llm_server, agent_settings, monkeypatch, owner
):
    monkeypatch.setenv("LLM_BASE_URL", llm_server.url)
    monkeypatch.setenv("LLM_MODEL", llm_server.model)
    settings = Settings(
        _env_file=None,
        app_env="test",
        data_dir=agent_settings.data_dir,
        database_url=agent_settings.database_url,
        statement_timeout_ms=agent_settings.statement_timeout_ms,
    )
    assert settings.llm_configured
    llm_server.script(tools(("run_sql", {"sql": APRIL_TOTAL_SQL})), "Done.")
    agent = agent_on(settings)
    try:
        assert agent.uses_llm and agent.model_name == llm_server.model
        answer = agent.ask("How much this month?", session_id=uuid.uuid4().hex)
    finally:
        agent.ctx.engine.dispose()
        agent.audit.engine.dispose()
    assert answer.tool_calls[0].ok and float(answer.last_table.iloc[0, 0]) == pytest.approx(_total(owner))
    assert len(llm_server.requests) == 2


def test_azure_openai_over_the_wire(llm_server, agent_settings, owner):
    from pydantic import SecretStr

    from backend.agent.agent import build_chat_model

    settings = agent_settings.model_copy(
        update={
            "llm_provider": "azure",
            "llm_base_url": llm_server.root,
            "llm_model": "costlake-gpt",
            "llm_api_key": SecretStr("azure-key"),
        }
    )
    llm_server.script(tools(("cost_breakdown", {"dimension": "total", "period": "this_month"})), "April so far.")
    agent = agent_on(settings, model=build_chat_model(settings, timeout_s=10, max_retries=0))
    try:
        answer = agent.ask("How much did we spend this month?", session_id=uuid.uuid4().hex)
    finally:
        agent.ctx.engine.dispose()
        agent.audit.engine.dispose()
    assert answer.text == "April so far." and answer.tool_calls[0].ok
    assert float(answer.last_table["cost"][0]) == pytest.approx(_total(owner))
    assert all(p.startswith("/openai/deployments/costlake-gpt/chat/completions?api-version=") for p in llm_server.paths)
    assert llm_server.paths and llm_server.refused == []


def test_sql_in_prose_runs_through_the_guard_and_says_so(llm_server, llm_agent, owner):
    llm_server.script(
        f"To get this month's total, run:\n\n```sql\n{APRIL_TOTAL_SQL};\n```\n\nThe total is {INVENTED} EUR."
    )
    events = list(llm_agent().stream("How much did we spend this month?", session_id=uuid.uuid4().hex))
    answer = events[-1]
    assert answer.answered_by == grounding.MODEL_SQL
    assert [(c.tool, c.ok, c.via) for c in answer.tool_calls] == [("run_sql", True, "model-sql")]
    assert float(answer.last_table.iloc[0, 0]) == pytest.approx(_total(owner))
    streamed = "".join(e for e in events if isinstance(e, str))
    assert INVENTED not in streamed and INVENTED not in answer.text  # the invented figure never reaches the user
    assert f"{_total(owner):.2f}"[:6] in answer.text.replace(",", "")
    assert "instead of calling a tool" in answer.text and "guard" in answer.text
    # The statement that ran is the guard's rewrite, with its row cap.
    assert answer.sql_statements[0]["sql"].endswith("LIMIT 1000")


def test_invented_table_in_prose_falls_back_to_the_rule_based_planner(llm_server, llm_agent, owner):
    # What Qwen2.5-Coder-1.5B answered through llama.cpp, near enough.
    llm_server.script(
        "You can use this query:\nSELECT SUM(cost) FROM cost_breakdown WHERE month = 'this month';\n"
        f"It returns {INVENTED}."
    )
    session = uuid.uuid4().hex
    answer = llm_agent().ask("How much did we spend this month?", session_id=session)
    assert answer.answered_by == grounding.RULES
    assert [(c.tool, c.ok, c.via) for c in answer.tool_calls] == [
        ("run_sql", False, "model-sql"),
        ("cost_breakdown", True, "rules"),
    ]
    assert "not allowed" in answer.tool_calls[0].outcome.summary or "unknown" in answer.tool_calls[0].outcome.summary
    assert INVENTED not in answer.text
    assert _money(_total(owner)) in answer.text and "rule-based planner" in answer.text
    row = _audit(owner, session)
    assert [c["via"] for c in row["tool_calls"]] == ["model-sql", "rules"]


def test_prose_without_sql_falls_back_to_the_rule_based_planner(llm_server, llm_agent, owner):
    llm_server.script(f"Your spend this month was {INVENTED} EUR, mostly Virtual Machines.")
    answer = llm_agent().ask("How much did we spend this month?")
    assert answer.answered_by == grounding.RULES and INVENTED not in answer.text
    assert [(c.tool, c.via) for c in answer.tool_calls] == [("cost_breakdown", "rules")]
    assert _money(_total(owner)) in answer.text and "called no tool" in answer.text


def test_prose_the_rules_cannot_back_is_shown_only_without_figures(llm_server, llm_agent):
    llm_server.script("Hello! Ask me about your cloud costs.")
    answer = llm_agent().ask("hello there, who are you")
    assert answer.answered_by == grounding.NO_QUERY and not answer.tool_calls
    assert answer.text.startswith("Hello! Ask me about your cloud costs.") and "no query ran" in answer.text

    llm_server.script(f"The meaning of life is {INVENTED}.")
    answer = llm_agent().ask("what is the meaning of life?")
    assert answer.answered_by == grounding.NO_QUERY and INVENTED not in answer.text
    assert "not shown" in answer.text


def test_a_tool_call_printed_as_text_is_run(llm_server, llm_agent, owner):
    llm_server.script(
        '<tool_call>\n{"name": "cost_breakdown", "arguments": {"dimension": "total", "period": "this_month"}}\n'
        "</tool_call>"
    )
    answer = llm_agent().ask("How much did we spend this month?")
    assert answer.answered_by == grounding.MODEL_TEXT_CALL
    assert [(c.tool, c.ok, c.via) for c in answer.tool_calls] == [("cost_breakdown", True, "model-text-call")]
    assert _money(_total(owner)) in answer.text


def test_malformed_tool_arguments_fall_back(llm_server, llm_agent, owner):
    llm_server.script(tools(Call("cost_breakdown", '{"dimension": "total", "period": ')), "ok")
    answer = llm_agent().ask("How much did we spend this month?")
    assert answer.answered_by == grounding.RULES and answer.error is None
    assert answer.tool_calls[-1].via == "rules" and answer.tool_calls[-1].ok
    assert _money(_total(owner)) in answer.text


def test_server_error_falls_back_with_the_reason(llm_server, llm_agent, owner):
    llm_server.script(error(500, "model crashed"))
    answer = llm_agent().ask("How much did we spend this month?")
    assert answer.error and "500" in answer.error and "model crashed" in answer.error
    assert answer.answered_by == grounding.RULES
    assert _money(_total(owner)) in answer.text and "endpoint failed" in answer.text


def test_client_timeout_falls_back(llm_server, llm_agent, owner):
    llm_server.script(slow(5))
    t0 = time.perf_counter()
    answer = llm_agent(timeout_s=0.5).ask("How much did we spend this month?")
    assert time.perf_counter() - t0 < 4
    assert answer.error and "Timeout" in answer.error and answer.answered_by == grounding.RULES
    assert _money(_total(owner)) in answer.text


def test_unreachable_endpoint_without_a_plan_says_so(llm_server, llm_agent):
    llm_server.script(error(503, "loading model"))
    answer = llm_agent().ask("what is the meaning of life?")
    assert answer.answered_by == grounding.NO_QUERY and not any(c.ok for c in answer.tool_calls)
    assert "could not be reached" in answer.text


def test_figures_no_result_holds_are_flagged_under_a_streamed_answer(llm_server, llm_agent, owner):
    llm_server.script(
        tools(("cost_breakdown", {"dimension": "total", "period": "this_month"})),
        f"April so far: {_money(_total(owner))} EUR, and {INVENTED} EUR next month.",
    )
    events = list(llm_agent().stream("How much did we spend this month?"))
    answer = events[-1]
    streamed = "".join(e for e in events if isinstance(e, str))
    assert streamed.strip() == answer.text
    assert answer.answered_by == grounding.MODEL
    note = answer.text.split("\n\nNote: ", 1)[1]
    assert INVENTED in note and _money(_total(owner)) not in note


def test_the_model_may_answer_after_a_failed_call_only_from_a_result(llm_server, llm_agent, owner):
    # It tries a write, is refused, then invents a figure: no result backs it, so the planner answers.
    llm_server.script(tools(("run_sql", {"sql": "DELETE FROM mart.anomalies"})), f"I deleted them; {INVENTED} left.")
    answer = llm_agent().ask("How many anomalies were detected?")
    assert answer.tool_calls[0].tool == "run_sql" and not answer.tool_calls[0].ok
    assert INVENTED not in answer.text and answer.answered_by in (grounding.RULES, grounding.NO_QUERY)


def test_without_forcing_the_first_call_tool_choice_is_left_to_the_server(llm_server, llm_agent):
    llm_server.script(tools(("list_tables", {})), "The mart has views.")
    llm_agent(force_first_tool=False).ask("what tables can I query?")
    assert all("tool_choice" not in r for r in llm_server.requests)


def test_the_audit_names_a_default_user_when_none_is_given(llm_server, llm_agent, owner):
    llm_server.script(tools(("list_tables", {})), "Views listed.")
    session = uuid.uuid4().hex
    llm_agent().ask("what tables can I query?", session_id=session)
    assert _audit(owner, session)["user_name"] == default_user() != ""


def test_the_fake_server_refuses_what_llama_cpp_refuses(llm_server, agent_settings):
    # The plain client sends null content beside tool calls: the fake (like llama.cpp) answers 400.
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI
    from openai import BadRequestError

    history = [
        HumanMessage("q"),
        AIMessage("", tool_calls=[{"name": "list_tables", "args": {}, "id": "call_1", "type": "tool_call"}]),
        ToolMessage("tables", tool_call_id="call_1"),
    ]
    plain = ChatOpenAI(model=llm_server.model, base_url=llm_server.url, api_key="x", max_retries=0)
    llm_server.script("fine")
    with pytest.raises(BadRequestError):
        plain.invoke(history)
    assert "content must not be null" in llm_server.refused[0]
    with pytest.raises(BadRequestError):
        plain.invoke([HumanMessage("q"), ToolMessage("orphan", tool_call_id="call_x")])


CORPUS = {**BAD, **HEAVY, **QUOTING}


def test_attack_corpus_over_the_wire_writes_nothing_and_stops_at_the_timeout(llm_server, llm_agent, before):
    # Each statement twice: as a real tool call, and as SQL written in prose (the path that runs SQL the
    # model did not send as a call). One agent and one snapshot for the corpus keep this to seconds.
    agent = llm_agent()
    for name, sql in CORPUS.items():
        for as_call, script in ((True, tools(("run_sql", {"sql": sql}))), (False, f"Run this:\n```sql\n{sql}\n```")):
            llm_server.script(script, "done")
            t0 = time.perf_counter()
            answer = agent.ask("attack", session_id="attack-wire")
            assert (time.perf_counter() - t0) * 1000 < TIMEOUT_MS + 5000, name
            for statement in answer.sql_statements:
                assert statement["duration_ms"] < TIMEOUT_MS + 500, (name, statement)
            sql_calls = [c for c in answer.tool_calls if c.tool == "run_sql"]
            # Prose that holds no SELECT (a bare DELETE) runs nothing: the planner answers or nothing does.
            assert sql_calls or not as_call, name
            for call in sql_calls:
                assert call.ok or call.outcome.summary.startswith("error:"), name
            if sql in HEAVY.values() and sql_calls:
                assert not sql_calls[0].ok and "timeout" in sql_calls[0].outcome.summary, name


NAMED_BREAKDOWN = {"type": "function", "function": {"name": "cost_breakdown"}}


@pytest.fixture
def strict_server():
    """A server that streams like llama-cpp-python's chatml-function-calling: it refuses tool_choice "required"
    and repeats each call's id and name in every chunk."""
    from tests.agent.fake_openai import FakeChatServer

    server = FakeChatServer(
        model="qwen2.5-coder-1.5b-instruct-q4_k_m", refuse_required=True, repeat_call_names=True
    ).start()
    yield server
    server.stop()


def test_a_server_that_refuses_required_gets_the_planned_tool_named(strict_server, agent_settings, owner):
    from backend.agent.agent import build_chat_model

    settings = agent_settings.model_copy(update={"llm_base_url": strict_server.url, "llm_model": strict_server.model})
    agent = agent_on(settings, model=build_chat_model(settings, timeout_s=10, max_retries=0))
    try:
        # The refused request takes no reply from the script.
        strict_server.script(
            tools(("cost_breakdown", {"dimension": "total", "period": "this_month"})),
            "April so far, from the table below.",
        )
        answer = agent.ask("How much did we spend this month?")
        assert answer.error is None and answer.answered_by == grounding.MODEL
        assert [(c.tool, c.ok, c.via) for c in answer.tool_calls] == [("cost_breakdown", True, "model")]
        assert float(answer.last_table["cost"][0]) == pytest.approx(_total(owner))
        assert strict_server.refused == ["tool_choice 'required'"]
        # Such a server's template drops tool results: the tool's summary answers, no phrasing request.
        assert [r.get("tool_choice") for r in strict_server.requests] == [NAMED_BREAKDOWN]
        assert _money(_total(owner)) in answer.text

        # From then on the tool is named straight away: no request is wasted on "required".
        strict_server.script(tools(("cost_breakdown", {"dimension": "service", "period": "2025-03"})), "March.")
        answer = agent.ask("Top 5 services by cost last month")
        assert strict_server.refused == [] and strict_server.requests[0]["tool_choice"] == NAMED_BREAKDOWN
        assert answer.answered_by == grounding.MODEL and answer.tool_calls[0].ok
    finally:
        agent.ctx.engine.dispose()
        agent.audit.engine.dispose()


def test_refused_required_without_a_plan_lets_the_model_choose(strict_server, agent_settings):
    from backend.agent.agent import build_chat_model

    settings = agent_settings.model_copy(update={"llm_base_url": strict_server.url, "llm_model": strict_server.model})
    agent = agent_on(settings, model=build_chat_model(settings, timeout_s=10, max_retries=0))
    try:
        strict_server.script("Hello! Ask me about your cloud costs.")
        answer = agent.ask("hello there, who are you")
    finally:
        agent.ctx.engine.dispose()
        agent.audit.engine.dispose()
    assert answer.error is None and strict_server.refused == ["tool_choice 'required'"]
    assert [r["tool_choice"] for r in strict_server.requests] == ["auto"]
    assert answer.answered_by == grounding.NO_QUERY and "no query ran" in answer.text


def test_results_answer_without_a_phrasing_call_when_asked(llm_server, llm_agent, owner):
    llm_server.script(tools(("cost_breakdown", {"dimension": "total", "period": "this_month"})), f"{INVENTED} EUR.")
    answer = llm_agent(phrase_results=False).ask("How much did we spend this month?")
    assert len(llm_server.requests) == 1  # the tool's summary answers: the model is not asked again
    assert answer.answered_by == grounding.MODEL and INVENTED not in answer.text
    assert _money(_total(owner)) in answer.text


def test_planned_mode_names_the_planner_tool_and_the_model_writes_its_arguments(llm_server, llm_agent, owner):
    from backend.agent.agent import PLANNED

    # The scripted reply calls another tool; a grammar-constrained server can only call the one named.
    llm_server.script(tools(("cost_breakdown", {"dimension": "total", "period": "2025-04"})), "April.")
    answer = llm_agent(tool_choice=PLANNED).ask("How much did we spend this month?")
    assert llm_server.requests[0]["tool_choice"] == NAMED_BREAKDOWN
    # The planner's arguments are a draft after the question, for this request only.
    asked = llm_server.requests[0]["messages"][-1]["content"]
    assert asked.startswith("How much did we spend this month?") and "data ends on 2025-04-27" in asked
    assert "would call cost_breakdown with" in asked and '"period": "this_month"' in asked
    user_messages = [m for m in llm_server.requests[1]["messages"] if m["role"] == "user"]
    assert user_messages[-1]["content"] == "How much did we spend this month?"
    assert [(c.tool, c.args["period"], c.via) for c in answer.tool_calls] == [("cost_breakdown", "2025-04", "model")]
    assert float(answer.last_table["cost"][0]) == pytest.approx(_total(owner))

    # A call that leaves arguments out gets the draft's values for them; what it wrote stands.
    llm_server.script(tools(("untagged_share", {"period": "2025-03"})), "March.")
    answer = llm_agent(tool_choice=PLANNED).ask("What share of cost is untagged for the owner tag this month?")
    assert [(c.tool, c.args["tag_key"], c.args["period"]) for c in answer.tool_calls] == [
        ("untagged_share", "owner", "2025-03")
    ]

    llm_server.script(tools(("list_tables", {})), "The mart's views.")
    answer = llm_agent(tool_choice=PLANNED).ask("hmm, tell me something interesting")
    assert llm_server.requests[0]["tool_choice"] == "required"  # no plan: the model picks the tool


def test_a_final_reply_that_is_sql_or_a_printed_call_is_not_the_answer(llm_server, llm_agent, owner):
    for final in (
        f"```sql\n{APRIL_TOTAL_SQL}\n```",
        '<tool_call>\n{"name": "cost_breakdown", "arguments": {"dimension": "total"}}\n</tool_call>',
    ):
        llm_server.script(tools(("cost_breakdown", {"dimension": "total", "period": "this_month"})), final)
        answer = llm_agent().ask("How much did we spend this month?")
        assert "SELECT" not in answer.text and "tool_call" not in answer.text
        assert _money(_total(owner)) in answer.text and answer.answered_by == grounding.MODEL


def test_unknown_tool_choice_mode_is_refused():
    from backend.agent.agent import first_tool_call

    with pytest.raises(ValueError, match="planned"):
        first_tool_call(mode="always")
