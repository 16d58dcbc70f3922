"""Page queries on the read-only role agree with the gold rows they were loaded from, whichever table serves them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest

from backend.lake.delta import lake_from_settings
from backend.mart import queries
from backend.mart.load import load_gold
from tests.mart import synthetic_gold

START = dt.date(2026, 1, 1)  # January + 10 days of February


@pytest.fixture
def gold(mart_settings) -> pd.DataFrame:
    lake = lake_from_settings(mart_settings)
    daily = synthetic_gold.gold_cost_daily(start=START, days=41, rows_per_day=30, resources=60)
    synthetic_gold.write_gold(lake, daily)
    load_gold(mart_settings, lake, run_id="r1")
    frame = daily.to_pandas()
    frame["charge_date"] = pd.to_datetime(frame["charge_date"]).dt.date
    return frame


def _total(frame: pd.DataFrame, column: str = "actual_cost") -> Decimal:
    return sum(frame[column], Decimal(0))


def test_kpis(reader, gold):
    k = queries.kpis(reader)
    assert k.data_as_of == dt.date(2026, 2, 10)
    feb = gold[gold.charge_date >= dt.date(2026, 2, 1)]
    jan = gold[gold.charge_date < dt.date(2026, 2, 1)]
    assert k.month_to_date == _total(feb)
    assert k.last_month_same_point == _total(jan[jan.charge_date <= dt.date(2026, 1, 10)])
    assert k.last_month_total == _total(jan)
    assert k.currencies == ["EUR"]
    amortized = queries.kpis(reader, metric="amortized", filters={"service": ["Storage"]})
    assert amortized.month_to_date == _total(feb[feb.service_name == "Storage"], "amortized_cost")


@pytest.mark.parametrize("grain", ["daily", "weekly", "monthly"])
def test_breakdown_by_service_matches_gold(reader, gold, grain):
    frame = queries.cost_breakdown(reader, start=START, end=dt.date(2026, 1, 31), group_by="service", grain=grain)
    jan = gold[gold.charge_date <= dt.date(2026, 1, 31)]
    expected = jan.assign(service=jan.service_name.replace("", "(none)")).groupby("service")["actual_cost"].sum()
    got = frame.groupby("group")["cost_exact"].sum()
    assert got.to_dict() == expected.to_dict()
    if grain == "monthly":
        assert set(frame["period"]) == {dt.date(2026, 1, 1)}
    if grain == "weekly":
        assert all(p.weekday() == 0 for p in frame["period"])


def test_breakdown_filters_and_fact_drilldown(reader, gold):
    subs = sorted(gold.subscription_name.unique())[:2]
    frame = queries.cost_breakdown(
        reader,
        start=START,
        end=dt.date(2026, 2, 10),
        group_by="resource",  # whole months of data at monthly grain: agg_cost_resource_monthly
        grain="monthly",
        filters={"subscription": subs, "region": ["westeurope", "eastus"]},
    )
    want = gold[gold.subscription_name.isin(subs) & gold.region.isin(["westeurope", "eastus"])]
    assert sum(frame["cost_exact"], Decimal(0)) == _total(want)
    assert set(frame["group"]) == set(want.resource_name)


def test_breakdown_by_tag_from_both_tables(reader, gold):
    # Group by tag alone: served by agg_cost_by_tag. With a service filter: fact + bridge.
    by_tag = queries.cost_breakdown(reader, start=START, end=dt.date(2026, 2, 10), group_by="tag:team")
    assert sum(by_tag["cost_exact"], Decimal(0)) == _total(gold)
    assert "untagged" in set(by_tag["group"])
    via_fact = queries.cost_breakdown(
        reader,
        start=START,
        end=dt.date(2026, 2, 10),
        group_by="tag:team",
        filters={"service": ["Storage", "Key Vault"]},
    )
    want = gold[gold.service_name.isin(["Storage", "Key Vault"])]
    assert sum(via_fact["cost_exact"], Decimal(0)) == _total(want)
    untagged_only = queries.cost_breakdown(
        reader, start=START, end=dt.date(2026, 2, 10), group_by="service", filters={"tag:team": ["untagged"]}
    )
    assert sum(untagged_only["cost_exact"], Decimal(0)) == (by_tag[by_tag.group == "untagged"]["cost_exact"].sum())


def test_whole_months_of_the_data(reader, gold):
    assert queries._whole_months(reader, dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    assert queries._whole_months(reader, dt.date(2026, 2, 1), dt.date(2026, 2, 10))  # up to the last loaded day
    assert queries._whole_months(reader, dt.date(2025, 12, 20), dt.date(2026, 3, 5))  # beyond the data
    assert not queries._whole_months(reader, dt.date(2026, 1, 2), dt.date(2026, 1, 31))
    assert not queries._whole_months(reader, dt.date(2026, 2, 1), dt.date(2026, 2, 9))


@pytest.mark.parametrize(
    ("group_by", "filters"),
    [
        ("resource", None),
        ("meter", {"service": ["Storage", "Virtual Machines"]}),
        ("tag:team", {"service": ["Storage", "Key Vault"]}),
        ("service", {"resource": ["r1", "r2", "r3"]}),
        ("region", {"tag:env": ["prod"]}),
    ],
)
def test_resource_grain_monthly_views_read_the_resource_aggregate(reader, gold, group_by, filters):
    start, end = dt.date(2026, 1, 1), dt.date(2026, 2, 10)
    assert queries._choose_table(group_by, filters, "monthly", True) == "agg_cost_resource_monthly"
    assert queries._choose_table(group_by, filters, "daily", True) == "fact_cost_daily"
    monthly = queries.cost_breakdown(reader, start=start, end=end, group_by=group_by, grain="monthly", filters=filters)
    daily = queries.cost_breakdown(reader, start=start, end=end, group_by=group_by, grain="daily", filters=filters)
    assert not monthly.empty
    daily["period"] = [d.replace(day=1) for d in daily["period"]]
    want = daily.groupby(["period", "group", "currency"])["cost_exact"].sum()
    got = monthly.set_index(["period", "group", "currency"])["cost_exact"]
    assert got.to_dict() == want.to_dict()


def test_top_resources_for_a_month(reader, gold):
    top = queries.cost_breakdown(
        reader, start=dt.date(2026, 2, 1), end=dt.date(2026, 2, 10), group_by="resource", grain="monthly", top_n=5
    )
    feb = gold[gold.charge_date >= dt.date(2026, 2, 1)]
    by_resource = feb.groupby("resource_name")["actual_cost"].sum().sort_values(ascending=False)
    assert set(top["group"]) == set(by_resource.index[:5]) | {"Other"}
    assert sum(top["cost_exact"], Decimal(0)) == _total(feb)


def test_top_n_folds_the_rest_into_other(reader, gold):
    frame = queries.cost_breakdown(reader, start=START, end=dt.date(2026, 2, 10), group_by="resource", top_n=3)
    assert frame["group"].nunique() == 4 and "Other" in set(frame["group"])
    assert sum(frame["cost_exact"], Decimal(0)) == _total(gold)


def test_time_series_and_movers(reader, gold):
    series = queries.time_series(reader, start=START, end=dt.date(2026, 2, 10))
    assert len(series) == 41 and sum(series["cost_exact"], Decimal(0)) == _total(gold)
    movers = queries.top_movers(
        reader,
        dimension="service",
        current=(dt.date(2026, 2, 1), dt.date(2026, 2, 10)),
        previous=(dt.date(2026, 1, 1), dt.date(2026, 1, 10)),
        limit=3,
    )
    assert len(movers) == 3
    assert list(movers["change"].abs()) == sorted(movers["change"].abs(), reverse=True)


def test_dimension_values_and_errors(reader, gold):
    assert "(none)" in queries.dimension_values(reader, "service")
    assert queries.dimension_values(reader, "service", search="stor") == ["Storage"]
    assert queries.dimension_values(reader, "tag:env") == ["dev", "prod", "test", "untagged"]
    assert queries.tag_keys(reader) == ["env", "team"]
    assert "subscription" in queries.dimensions()
    with pytest.raises(queries.QueryError):
        queries.cost_breakdown(reader, start=START, end=START, group_by="service; DROP TABLE x")
    with pytest.raises(queries.QueryError):
        queries.cost_breakdown(reader, start=START, end=START, metric="bogus")
    fresh = queries.freshness(reader)
    assert fresh.data_as_of == dt.date(2026, 2, 10) and fresh.last_load_status == "succeeded"
    assert fresh.fact_months == ["2026-01", "2026-02"]


def test_empty_mart(reader):
    k = queries.kpis(reader)
    assert k.data_as_of is None and k.month_to_date == 0
    assert queries.cost_breakdown(reader, start=START, end=START).empty


@pytest.mark.parametrize(
    ("group_by", "grain", "filters"),
    [
        ("resource", "daily", None),
        ("resource", "weekly", {"subscription": ["sub-1", "sub-2"]}),
        ("meter", "daily", {"service": ["Storage"]}),
    ],
)
def test_top_n_per_day_from_the_aggregates_equals_the_fact_only_answer(
    reader, gold, monkeypatch, group_by, grain, filters
):
    calls = []
    hybrid = queries._top_n_by_day
    monkeypatch.setattr(queries, "_top_n_by_day", lambda *a, **k: calls.append(1) or hybrid(*a, **k))
    args = {"start": START, "end": dt.date(2026, 2, 10), "group_by": group_by, "grain": grain, "filters": filters}
    fast = queries.cost_breakdown(reader, top_n=2, **args)
    assert calls == [1]
    monkeypatch.setattr(queries, "_whole_months", lambda *a: False)  # forces the fact-only query
    slow = queries.cost_breakdown(reader, top_n=2, **args)
    assert calls == [1]
    assert fast.to_dict("records") == slow.to_dict("records")
    assert "Other" in set(fast["group"]) and fast["group"].nunique() == 3
