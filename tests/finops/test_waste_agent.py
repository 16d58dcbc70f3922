"""The agent's savings and waste tools on the hand-made estate, the questions that reach them, and their catalog."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from backend.agent import catalog
from backend.agent.rules import QuestionParser, Vocabulary
from backend.agent.tools import (
    AgentContext,
    ToolInputError,
    build_tools,
    run_sql_impl,
    savings_summary_impl,
    waste_list_impl,
)
from backend.lake.delta import lake_from_settings
from backend.mart.load import load_gold
from tests.finops import helpers as h


@pytest.fixture
def ctx(mart_settings, reader):
    lake = lake_from_settings(mart_settings)
    h.write(lake, h.estate(), h.changes())
    load_gold(mart_settings, lake, run_id="r1")
    return AgentContext(reader, timeout_ms=5000)


def test_savings_summary_per_currency_with_not_available(ctx):
    out = savings_summary_impl(ctx, period="this_month")  # the data's month: March 2026
    assert out.ok
    rows = {r["currency"]: r for r in out.frame.to_dict("records")}
    usd, eur = rows["USD"], rows["EUR"]
    assert usd["negotiated_savings"] == pytest.approx(3.0) and usd["commitment_savings"] == pytest.approx(3.5)
    assert usd["effective_savings_rate_pct"] == 17.7 and usd["commitment_utilisation_pct"] == 85.7
    assert eur["effective_savings_rate_pct"] == 50.0 and pd.isna(eur["commitment_utilisation_pct"])
    assert "USD: effective savings rate 17.7%; negotiated savings 3.00, commitment savings 3.50" in out.summary
    assert "EUR: effective savings rate 50.0%; negotiated savings not available" in out.summary
    assert "No cost" in savings_summary_impl(ctx, period="2026-01").summary


def test_waste_list_by_kind(ctx):
    every = waste_list_impl(ctx, month="this_month")
    assert set(every.frame["finding"]) == {
        "Unattached managed disk",
        "Stopped but billed VM",
        "Idle public IP address",
        "Cost without usage",
        "Cost started",
        "Cost stopped",
    }
    assert every.frame["monthly_cost"].iloc[0] == pytest.approx(12.0)  # vm1's month, whose cost stopped
    disks = waste_list_impl(ctx, kind="unattached disks", month="2026-03")
    assert list(disks.frame["resource_id"]) == [h.DISK1]
    assert disks.frame["link"].iloc[0] == "https://portal.azure.com/#@/resource" + h.DISK1
    assert "Unattached managed disk: 1 resources, 2.00 USD" in disks.summary
    assert list(waste_list_impl(ctx, kind="zero_usage", month="2026-03").frame["resource_id"]) == [h.LB1]
    assert list(waste_list_impl(ctx, kind="stopped", month="2026-03").frame["resource_id"]) == [h.VM1]
    assert "No orphans waste findings" in waste_list_impl(ctx, kind="orphans", month="2026-01").summary
    with pytest.raises(ToolInputError, match="unknown waste kind"):
        waste_list_impl(ctx, kind="everything")


def test_the_tools_are_registered_with_their_schemas(ctx):
    tools = {t.name: t for t in build_tools(ctx)}
    assert {"savings_summary", "waste_list"} <= set(tools)
    content, outcome = tools["waste_list"].func(kind="idle_public_ip", month="2026-03")
    assert outcome.ok and h.PIP1 in content and outcome.statements  # the SQL it ran is shown and audited


def test_run_sql_reads_the_savings_columns_and_cost_changes(ctx):
    # One predicate: the guard refuses AND today (sqlglot 30 makes it a Func; see the report of this change).
    sums = run_sql_impl(
        ctx,
        "SELECT currency, sum(list_cost) - sum(contracted_cost) AS negotiated FROM mart.v_cost_monthly "
        "WHERE contracted_cost IS NOT NULL GROUP BY currency",
    )
    assert dict(zip(sums.frame["currency"], sums.frame["negotiated"].astype(float), strict=True)) == {"USD": 3.0}
    changes = run_sql_impl(ctx, "SELECT event, resource_id FROM mart.resource_cost_changes ORDER BY event")
    assert list(changes.frame["event"]) == ["started", "stopped"]
    assert "mart.resource_cost_changes" in catalog.ALLOWED_TABLES
    assert "contracted_cost" in catalog.describe("v_cost_daily_summary")


VOCAB = Vocabulary(as_of=dt.date(2026, 3, 2), members={"storage": ("service", "Storage")})


@pytest.mark.parametrize(
    ("question", "call"),
    [
        ("What did we save last month?", ("savings_summary", {"period": "last_month"})),
        ("effective savings rate in 2026-02", ("savings_summary", {"period": "2026-02"})),
        ("How well are our reservations utilised?", ("savings_summary", {"period": "last_month"})),
        ("Which resources look wasted?", ("waste_list", {"kind": "all", "month": "last_month"})),
        ("unattached disks this month", ("waste_list", {"kind": "unattached_disk", "month": "this_month"})),
        ("Do we pay for idle public IPs?", ("waste_list", {"kind": "idle_public_ip", "month": "last_month"})),
        ("stopped VMs that are still billed", ("waste_list", {"kind": "stopped_vm", "month": "last_month"})),
        ("cost without usage last month", ("waste_list", {"kind": "zero_usage", "month": "last_month"})),
        ("resources whose cost stopped in 2026-03", ("waste_list", {"kind": "stopped", "month": "2026-03"})),
    ],
)
def test_questions_reach_the_savings_and_waste_tools(question, call):
    assert QuestionParser(VOCAB).plan(question).calls == [call]


def test_savings_plan_cost_is_still_a_cost_question():
    (name, _args), *_ = QuestionParser(VOCAB).plan("cost of savings plans last month by service").calls
    assert name != "savings_summary"
