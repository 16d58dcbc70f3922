"""Questions map to the tool calls an analyst would make; unknown questions get an honest answer with examples."""

from __future__ import annotations

import datetime as dt

import pytest

from backend.agent.periods import find_day, find_periods, resolve_day, resolve_period
from backend.agent.rules import QuestionParser, Vocabulary

AS_OF = dt.date(2025, 4, 27)
VOCAB = Vocabulary(
    as_of=AS_OF,
    members={
        "storage": ("service", "Storage"),
        "virtual machines": ("service", "Virtual Machines"),
        "production": ("subscription", "Production"),
        "data platform": ("subscription", "Data Platform"),
        "rg-data": ("resource_group", "rg-data"),
        "westeurope": ("region", "westeurope"),
    },
    tag_keys=("cost_center", "env", "owner"),
    budgets=("Production", "Storage", "Total cloud"),
)


def plan(question):
    return QuestionParser(VOCAB).plan(question)


@pytest.mark.parametrize(
    ("question", "tool", "expected"),
    [
        (
            "Top 5 services by cost last month",
            "cost_breakdown",
            {"dimension": "service", "period": "last_month", "top_n": 5},
        ),
        (
            "What are our three most expensive subscriptions in March?",
            "cost_breakdown",
            {"dimension": "subscription", "period": "2025-03", "top_n": 3},
        ),
        (
            "cost by resource group in Production this month",
            "cost_breakdown",
            {"dimension": "resource_group", "filters": {"subscription": "Production"}},
        ),
        ("How much did we spend this month?", "cost_breakdown", {"dimension": "total", "period": "this_month"}),
        (
            "total amortized cost of storage in the last 7 days",
            "cost_breakdown",
            {"dimension": "total", "metric": "amortized", "filters": {"service": "Storage"}, "period": "last_7_days"},
        ),
        ("cost by env tag last month", "cost_breakdown", {"dimension": "tag:env"}),
        (
            "Why did storage cost jump last Tuesday?",
            "explain_cost_change",
            {"day": "2025-04-22", "dimension": "service", "value": "Storage"},
        ),
        ("explain the spike on 2025-04-22", "explain_cost_change", {"day": "2025-04-22"}),
        ("forecast for the end of the month", "forecast", {"period": "this_month"}),
        ("what will Storage cost next month?", "forecast", {"period": "next_month", "value": "Storage"}),
        ("Are we within budget?", "budget_status", {}),
        ("what share of cost is untagged for the owner tag?", "untagged_share", {"tag_key": "owner"}),
        ("untagged cost", "untagged_share", {"tag_key": ""}),
        (
            "compare this month vs last month",
            "compare_periods",
            {"period": "this_month", "baseline": "last_month", "dimension": "total"},
        ),
        (
            "compare March and February by service",
            "compare_periods",
            {"period": "2025-03", "baseline": "2025-02", "dimension": "service"},
        ),
        ("which services drove the increase this month?", "compare_periods", {"dimension": "service"}),
        ("daily cost trend for the last 14 days", "cost_trend", {"grain": "daily", "period": "last_14_days"}),
        ("monthly cost by service", "cost_trend", {"grain": "monthly", "dimension": "service"}),
        ("SELECT count(*) FROM mart.v_budgets", "run_sql", {"sql": "SELECT count(*) FROM mart.v_budgets"}),
        ("what tables can I query?", "list_tables", {}),
    ],
)
def test_questions_map_to_tool_calls(question, tool, expected):
    result = plan(question)
    assert len(result.calls) == 1, result
    name, args = result.calls[0]
    assert name == tool
    for key, value in expected.items():
        assert args.get(key) == value, (key, args)


@pytest.mark.parametrize("question", ["what is the meaning of life?", "write me a poem", "delete the anomalies table"])
def test_unknown_questions_get_an_honest_answer_with_examples(question):
    result = plan(question)
    assert not result.calls
    assert "rule-based" in result.text and "Top 5 services by cost last month" in result.text


def span(period):
    return period.start, period.end


def test_periods():
    assert span(resolve_period("last_month", AS_OF)) == (dt.date(2025, 3, 1), dt.date(2025, 4, 1))
    assert span(resolve_period("this_month", AS_OF)) == (dt.date(2025, 4, 1), dt.date(2025, 4, 28))
    assert span(resolve_period("last_7_days", AS_OF)) == (dt.date(2025, 4, 21), dt.date(2025, 4, 28))
    assert resolve_period("2025-01-05..2025-01-06", AS_OF).days == 2
    assert span(resolve_period("2025-q1", AS_OF)) == (dt.date(2025, 1, 1), dt.date(2025, 4, 1))
    assert resolve_day("tuesday", AS_OF) == dt.date(2025, 4, 22)
    assert find_day("what happened on april 22nd?", AS_OF) == "2025-04-22"
    assert find_periods("compare january 2025 with the previous month", AS_OF) == ["2025-01", "last_month"]


VOCAB_CLOUD = Vocabulary(
    as_of=AS_OF,
    members=VOCAB.members | {"microsoft": ("provider", "Microsoft")},
    tag_keys=VOCAB.tag_keys,
    budgets=VOCAB.budgets,
)


@pytest.mark.parametrize(
    ("question", "tool", "expected"),
    [
        ("Which service cost us the most in March?", "cost_breakdown", {"dimension": "service", "top_n": 1}),
        ("the three costliest services last month", "cost_breakdown", {"dimension": "service", "top_n": 3}),
        ("top services this month", "cost_breakdown", {"dimension": "service", "top_n": 5}),
        ("which azure service did we spend most on in the last 30 days", "cost_breakdown", {"top_n": 1}),
        (
            "What was the most expensive day last month?",
            "cost_breakdown",
            {"dimension": "day", "period": "last_month", "top_n": 1},
        ),
        (
            "top 3 most expensive days in the last 30 days",
            "cost_breakdown",
            {"dimension": "day", "period": "last_30_days", "top_n": 3},
        ),
        ("which month was the most expensive?", "cost_breakdown", {"dimension": "month", "period": "all"}),
        ("What percentage of cost is missing an owner tag?", "untagged_share", {"tag_key": "owner"}),
        ("how much cost lacks a cost_center tag", "untagged_share", {"tag_key": "cost_center"}),
        ("lifetime cost of storage", "cost_breakdown", {"period": "all", "filters": {"service": "Storage"}}),
        (
            "amortised spend on VMs in Production in March",
            "cost_breakdown",
            {
                "dimension": "total",
                "metric": "amortized",
                "filters": {"service": "Virtual Machines", "subscription": "Production"},
            },
        ),
        (
            "What was the spend of resource group rg-data in April?",
            "cost_breakdown",
            {"dimension": "total", "filters": {"resource_group": "rg-data"}},
        ),
        ("how many anomalies were detected this month?", "count_anomalies", {"period": "this_month"}),
        ("count anomalies per service", "count_anomalies", {"group_by": "service", "period": "all"}),
        ("how many spikes were flagged?", "count_anomalies", {}),
        ("list the anomalies for storage", "list_anomalies", {"dimension": "service", "value": "Storage"}),
        ("Which unusual cost events were detected?", "list_anomalies", {"period": "all"}),
        ("why did storage spike last tuesday?", "explain_cost_change", {"day": "2025-04-22"}),
        ("the anomaly on april 22", "explain_cost_change", {"day": "2025-04-22"}),
        ("average daily cost in March", "average_cost", {"grain": "daily", "period": "2025-03"}),
        ("On average, how much do we spend a day this month?", "average_cost", {"period": "this_month"}),
        ("average monthly spend this year", "average_cost", {"grain": "monthly", "period": "this_year"}),
        ("mean daily cost of storage", "average_cost", {"filters": {"service": "Storage"}}),
        ("cost by cloud provider last month", "cost_breakdown", {"dimension": "provider"}),
        ("How much did we spend per cloud this month?", "cost_breakdown", {"dimension": "provider"}),
        ("How much did the cloud cost us in March", "cost_breakdown", {"dimension": "total", "period": "2025-03"}),
        ("cost by env tag for prod", "cost_breakdown", {"dimension": "tag:env"}),
    ],
)
def test_paraphrased_questions_map_to_tool_calls(question, tool, expected):
    result = QuestionParser(VOCAB_CLOUD).plan(question)
    assert len(result.calls) == 1, result
    name, args = result.calls[0]
    assert name == tool, args
    for key, value in expected.items():
        assert args.get(key) == value, (key, args)


def test_tag_values_are_not_read_as_subscriptions():
    _, args = QuestionParser(VOCAB_CLOUD).plan("cost by env tag for prod").calls[0]
    assert "filters" not in args or "subscription" not in args["filters"]


def test_more_period_phrases():
    assert find_periods("storage cost to date", AS_OF) == ["all"]
    assert find_periods("spend quarter to date", AS_OF) == ["this_quarter"]
    assert find_periods("month-to-date spend", AS_OF) == ["this_month"]
