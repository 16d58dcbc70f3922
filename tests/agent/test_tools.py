"""The tools added for anomalies, averages, ranked days and providers, on the seeded demo mart, against SQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.agent.tools import (
    ToolInputError,
    average_cost_impl,
    cost_breakdown_impl,
    cost_trend_impl,
    count_anomalies_impl,
    list_anomalies_impl,
)

MARCH = "charge_date BETWEEN '2025-03-01' AND '2025-03-31'"


@pytest.fixture(scope="module")
def ctx(rule_agent):
    return rule_agent.ctx


def _scalar(owner, sql):
    with owner.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_list_anomalies_largest_impact_first_and_by_member(ctx):
    every = list_anomalies_impl(ctx)
    assert every.ok and len(every.frame) == 3
    impacts = list(every.frame["impact"].abs())
    assert impacts == sorted(impacts, reverse=True)
    storage = list_anomalies_impl(ctx, dimension="service", value="storage")
    assert list(storage.frame["dimension_value"]) == ["Storage"] and "1 actual cost anomalies" in storage.summary
    assert list_anomalies_impl(ctx, period="2025-03").frame.empty


def test_count_anomalies_in_total_per_kind_and_per_member(ctx):
    assert int(count_anomalies_impl(ctx).frame["anomalies"][0]) == 3
    by_kind = count_anomalies_impl(ctx, group_by="kind").frame
    assert dict(zip(by_kind["kind"], by_kind["anomalies"], strict=True)) == {"spike": 2, "level_shift": 1}
    by_service = count_anomalies_impl(ctx, group_by="services").frame
    assert dict(zip(by_service["service"], by_service["anomalies"], strict=True)) == {
        "Storage": 1,
        "Azure Kubernetes Service": 1,
    }
    assert int(count_anomalies_impl(ctx, period="2025-03").frame["anomalies"].sum()) == 0


def test_average_cost_per_day_and_month(ctx, owner):
    march = _scalar(owner, f"SELECT sum(actual_cost) FROM mart.v_cost_daily_summary WHERE {MARCH}")
    result = average_cost_impl(ctx, period="2025-03")
    row = result.frame.iloc[0]
    assert row["periods"] == 31 and row["average"] == pytest.approx(float(march) / 31)
    assert row["lowest"] <= row["median"] <= row["highest"]
    monthly = average_cost_impl(ctx, period="2025-q1", grain="monthly").frame.iloc[0]
    assert monthly["periods"] == 3 and monthly["per"] == "month"


def test_days_rank_as_a_dimension(ctx, owner):
    with owner.connect() as conn:
        day, cost = conn.execute(
            sa.text(
                f"SELECT charge_date, sum(actual_cost) FROM mart.v_cost_daily_summary WHERE {MARCH} "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
            )
        ).one()
    top = cost_breakdown_impl(ctx, dimension="day", period="2025-03", top_n=1).frame
    assert list(top["day"]) == [day] and float(top["cost"][0]) == pytest.approx(float(cost))
    months = cost_breakdown_impl(ctx, dimension="months", period="all", top_n=12).frame
    assert len(months) == 4  # January to April 2025
    with pytest.raises(ToolInputError, match="cost_trend with grain='daily'"):
        cost_trend_impl(ctx, dimension="day")


def test_cost_by_provider(ctx, owner):
    frame = cost_breakdown_impl(ctx, dimension="cloud", period="2025-03").frame
    assert list(frame["provider"]) == ["Microsoft"]
    total = _scalar(owner, f"SELECT sum(actual_cost) FROM mart.v_cost_daily_summary WHERE {MARCH}")
    assert float(frame["cost"][0]) == pytest.approx(float(total))
