"""The evaluation's savings and waste questions: the rule-based agent answers each with the reference result."""

from __future__ import annotations

from bench.agent_evaluation import CASES, run_cases
from tests.agent.conftest import agent_settings, demo_mart_url, rule_agent  # noqa: F401  (session fixtures)

QUESTIONS = (
    "What was our effective savings rate last month?",
    "How much did we save against list prices in March?",
    "Which resources had cost without usage last month?",
)


def test_savings_and_waste_questions_score(rule_agent):  # noqa: F811
    cases = [c for c in CASES if c.question in QUESTIONS]
    assert len(cases) == len(QUESTIONS)
    results = run_cases(rule_agent, rule_agent.ctx.engine, cases=cases)
    assert [(r.question, r.tools, r.error) for r in results if not r.ok] == []
    assert {r.tools for r in results} == {"savings_summary(ok)", "waste_list(ok)"}
