"""The synthetic estate: determinism, FOCUS shape, commitments, tags, churn, detectable labelled anomalies, the source."""

from __future__ import annotations

import io
import json
from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from backend.demo.estate import FOCUS_SCHEMA, NATURAL_KEY, SyntheticSource, generate_estate
from backend.demo.prices import IDLE_RESOURCES
from backend.lake.catalog import MONEY
from backend.mart.cursors import PostgresCursorStore
from backend.mart.db import owner_engine
from backend.sources.base import ContentType, PayloadFormat
from backend.sources.chunks import payload_budget
from backend.sources.cursors import MemoryCursorStore, UnknownBatchError
from tests.conftest import make_settings

START = date(2025, 1, 1)


@pytest.fixture(scope="module")
def estate():
    return generate_estate(seed=7, start=START, months=7, target_rows=80_000)


@pytest.fixture(scope="module")
def frame(estate) -> pd.DataFrame:
    df = estate.plain_costs().to_pandas()
    df["day"] = df["ChargePeriodStart"].dt.date
    return df


def test_same_seed_same_data_and_other_seed_differs(estate):
    again = generate_estate(seed=7, start=START, months=7, target_rows=80_000)
    assert again.costs.equals(estate.costs)
    assert again.labels.equals(estate.labels)
    other = generate_estate(seed=8, start=START, months=7, target_rows=80_000)
    assert not other.costs.equals(estate.costs)


def test_shape_types_and_row_target(estate):
    costs = estate.costs
    assert 0.97 * 80_000 <= costs.num_rows <= 1.03 * 80_000
    assert costs.schema.names == FOCUS_SCHEMA.names
    assert estate.plain_costs().schema == FOCUS_SCHEMA
    for name in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity"):
        assert costs.schema.field(name).type == MONEY
    assert pc.min(costs["ChargePeriodStart"]).as_py().date() == START
    assert pc.max(costs["ChargePeriodStart"]).as_py().date() == date(2025, 7, 31)


def test_natural_key_is_unique(frame):
    assert not frame.duplicated(list(NATURAL_KEY)).any()


def test_realistic_catalog_and_estate(frame):
    assert frame["ServiceName"].nunique() >= 20
    assert frame["SubAccountId"].nunique() == 6
    assert frame["x_ResourceGroupName"].nunique() >= 18
    usage = frame[frame["ChargeCategory"] == "Usage"]
    assert (usage["BilledCost"] >= 0).all()
    # Resources are created and deleted inside the window.
    span = frame[frame["x_ResourceGroupName"].notna()].groupby("ResourceId")["day"].agg(["min", "max"])
    assert (span["min"] > START).sum() > 10
    assert (span["max"] < date(2025, 7, 31)).sum() > 10
    # Weekly seasonality: weekends are cheaper than weekdays.
    daily = usage.groupby("day")["ListCost"].sum().astype(float)
    weekend = np.array([d.weekday() >= 5 for d in daily.index])
    assert daily[weekend].mean() < 0.97 * daily[~weekend].mean()
    assert set(frame["x_PricingModel"]) == {"OnDemand", "Reservation", "SavingsPlan", "Spot"}
    assert set(frame["PricingCategory"]) == {"Standard", "Committed", "Dynamic"}


def test_commitments_make_actual_and_amortized_differ_but_agree_per_month(frame):
    covered = frame[(frame["ChargeCategory"] == "Usage") & frame["x_PricingModel"].isin(["Reservation", "SavingsPlan"])]
    assert len(covered) and (covered["BilledCost"] == 0).all() and (covered["EffectiveCost"] > 0).all()
    purchases = frame[frame["ChargeCategory"] == "Purchase"]
    assert len(purchases) and (purchases["BilledCost"] > 0).all() and (purchases["EffectiveCost"] == 0).all()
    assert (frame["CommitmentDiscountStatus"] == "Unused").any()
    commitment = frame[frame["CommitmentDiscountId"].notna()]
    by_month = commitment.groupby(commitment["ChargePeriodStart"].dt.strftime("%Y-%m"))[["BilledCost", "EffectiveCost"]]
    sums = by_month.sum()
    # Exact decimals: a reservation's monthly payment is the sum of its daily amortized cost.
    assert (sums["BilledCost"] == sums["EffectiveCost"]).all()
    day_totals = frame.groupby("day")[["BilledCost", "EffectiveCost"]].sum()
    assert (day_totals["BilledCost"] != day_totals["EffectiveCost"]).any()


def test_tags_are_messy_like_real_estates(frame):
    tags = frame.drop_duplicates("ResourceId")["Tags"]
    assert tags.isna().any() and (tags == "{}").any()
    keys = {k for t in tags.dropna() for k in json.loads(t)}
    assert {"env", "Env"} <= keys
    assert any(k != k.strip() for k in keys), "some tag keys carry stray spaces"
    values = {json.loads(t).get("env") for t in tags.dropna()} - {None}
    assert {"prod", "Prod", "production"} & values


def _daily(frame: pd.DataFrame, column: str, value: str) -> pd.Series:
    rows = frame[frame[column] == value]
    series = rows.groupby("day")["EffectiveCost"].sum().astype(float)
    days = [START + timedelta(days=i) for i in range((date(2025, 8, 1) - START).days)]
    return series.reindex(days, fill_value=0.0)


def test_anomalies_are_labelled_and_visible_in_service_and_resource_group_series(estate, frame, tmp_path):
    labels = estate.labels.to_pylist()
    assert len(labels) >= 8
    assert {lab["kind"] for lab in labels} == {"spike", "level_shift", "new_cost"}
    for lab in labels:
        assert lab["start_date"] >= START + timedelta(days=60)
        assert lab["relative_to_service"] >= 0.4 and lab["relative_to_resource_group"] >= 0.4
        for column, value in (("ServiceName", lab["service_name"]), ("x_ResourceGroupName", lab["resource_group"])):
            series = _daily(frame, column, value)
            before = series[lab["start_date"] - timedelta(days=28) : lab["start_date"] - timedelta(days=1)].mean()
            during = series[lab["start_date"] : min(lab["end_date"], lab["start_date"] + timedelta(days=4))].mean()
            assert during - before >= 0.3 * before, (lab, column)
    for suffix in (".csv", ".json", ".parquet"):
        path = estate.write_labels(tmp_path / f"labels{suffix}")
        assert path.stat().st_size > 100
    assert len(json.loads((tmp_path / "labels.json").read_text())) == len(labels)


def _rows(chunks) -> pa.Table:
    return pa.concat_tables(pq.read_table(io.BytesIO(c.payload)) for c in chunks)


def test_source_delivers_every_row_once_keyed_by_subscription_day(tmp_path):
    # A small estate: the property is per (subscription, day), not per size.
    estate = generate_estate(seed=3, start=START, months=1, target_rows=5_000, subscriptions=2)
    settings = make_settings(tmp_path)
    cursors = MemoryCursorStore()
    source = SyntheticSource(settings, estate, cursors=cursors)
    chunks = list(source.fetch("b1"))
    assert all(c.format == PayloadFormat.focus and c.content_type == ContentType.parquet for c in chunks)
    first = chunks[0]
    assert first.key == f"{first.meta['sub_account_id']}|{first.meta['window_start']}"
    assert first.meta["source"] == "synthetic" and first.meta["metric"] == "FocusCost"
    delivered = _rows(chunks)
    assert delivered.num_rows == estate.costs.num_rows
    assert delivered.schema == FOCUS_SCHEMA
    assert pc.sum(delivered["BilledCost"]).as_py() == pc.sum(estate.costs["BilledCost"]).as_py()
    assert sum(Decimal(c.meta["billed_cost_total"]) for c in chunks) == pc.sum(estate.costs["BilledCost"]).as_py()

    # Not committed: the next fetch delivers the same days again (bronze never confirmed them).
    assert len(list(source.fetch("b2"))) == len(chunks)
    source.commit("b2")
    assert list(source.fetch("b3")) == []
    day = START + timedelta(days=20)
    again = SyntheticSource(settings, estate, cursors=cursors, redeliver=[day])
    redelivered = list(again.fetch("b4"))
    assert redelivered and {c.meta["window_start"] for c in redelivered} == {day.isoformat()}
    rows = cursors.rows("synthetic")
    assert sum(r.row_count for r in rows) == estate.costs.num_rows


def test_big_subscription_days_are_split_under_the_message_limit(estate, tmp_path):
    settings = make_settings(tmp_path, kafka_max_message_bytes=18_000)
    source = SyntheticSource(settings, estate, cursors=MemoryCursorStore(), until=START + timedelta(days=3))
    chunks = list(source.fetch("b1"))
    assert all(len(c.payload) <= payload_budget(settings) for c in chunks)
    split = [c for c in chunks if int(c.meta["chunk_count"]) > 1]
    assert split, "a (subscription, day) over the limit is cut into several chunks"
    key = split[0].key
    same = [c for c in chunks if c.key == key]
    assert sorted(int(c.meta["chunk_index"]) for c in same) == list(range(len(same)))
    assert _rows(chunks).num_rows == sum(
        1 for d in estate.plain_costs()["ChargePeriodStart"].to_pylist() if d.date() <= START + timedelta(days=3)
    )


def test_source_holds_back_days_after_until(estate, tmp_path):
    until = START + timedelta(days=9)
    source = SyntheticSource(make_settings(tmp_path), estate, cursors=MemoryCursorStore(), until=until)
    days = {c.meta["window_start"] for c in source.fetch("b1")}
    assert max(days) == until.isoformat() and len(days) == 10


def test_postgres_cursor_store_stages_and_commits_once(pg_url, estate, tmp_path):
    from backend.mart.migrate import upgrade

    upgrade(pg_url)
    engine = owner_engine(pg_url)
    store = PostgresCursorStore(engine)
    try:
        until = START + timedelta(days=2)
        source = SyntheticSource(make_settings(tmp_path), estate, cursors=store, until=until)
        chunks = list(source.fetch("batch-1"))
        assert chunks
        with pytest.raises(UnknownBatchError):
            store.commit("never-fetched")
        assert store.delivered("synthetic") == set()
        source.commit("batch-1")
        assert store.commit("batch-1") == 0  # idempotent
        delivered = store.delivered("synthetic")
        assert len(delivered) == 3 * 6
        rows = store.rows("synthetic")
        first_day = [c for c in chunks if c.meta["window_start"] == START.isoformat()]
        assert sum(r.reported_total for r in rows if r.day == START) == sum(
            Decimal(c.meta["billed_cost_total"]) for c in first_day
        )
        assert list(source.fetch("batch-2")) == []
    finally:
        engine.dispose()


# --- any size, seed and start month: the demo takes all three from settings --------------------
MONEY_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity", "ListUnitPrice")


def _team(tags: str | None) -> str | None:
    for key, value in json.loads(tags or "{}").items():
        if key.strip().lower() == "team":
            return value.strip().lower()
    return None


def _check_estate(estate, target_rows: int) -> None:
    costs = estate.plain_costs()
    # Whole resources, commitment lines and new_cost resources come on top of the target: a few
    # hundred rows each, which only shows in the smallest estates; so do the idle resources (one row
    # each per day, whatever the size: the Waste & savings page must find them in every estate).
    idle = len(IDLE_RESOURCES) * len(estate.days)
    assert 0.95 * target_rows <= costs.num_rows <= 1.05 * target_rows + 2_500 + idle
    for name in MONEY_COLUMNS:
        assert costs.schema.field(name).type == MONEY
    assert isinstance(pc.sum(costs["BilledCost"]).as_py(), Decimal)
    assert pc.min(costs["BilledCost"]).as_py() >= 0 and pc.min(costs["EffectiveCost"]).as_py() >= 0
    keys = costs.select(list(NATURAL_KEY)).group_by(list(NATURAL_KEY)).aggregate([])
    assert keys.num_rows == costs.num_rows, "natural key is unique"

    labels = estate.labels.to_pylist()
    assert len({lab["anomaly_id"] for lab in labels}) == len(labels)
    if not labels:
        return
    ids = pa.array([lab["resource_id"] for lab in labels])
    rows = costs.filter(pc.is_in(costs["ResourceId"], ids)).to_pandas()
    rows["day"] = rows["ChargePeriodStart"].dt.date
    for lab in labels:
        res = rows[rows["ResourceId"] == lab["resource_id"]]
        assert len(res), lab
        assert set(res["ServiceName"]) == {lab["service_name"]}
        assert set(res["x_ResourceGroupName"]) == {lab["resource_group"]}
        assert set(res["SubAccountId"]) == {lab["subscription_id"]}
        assert set(res["SubAccountName"]) == {lab["subscription_name"]}
        assert lab["meter_name"] in set(res["x_MeterName"])
        expected = {
            "service": lab["service_name"],
            "resource_group": lab["resource_group"],
            "subscription": lab["subscription_id"],
            "tag": _team(res["Tags"].iloc[0]),
        }[lab["level"]]
        assert lab["value"] == expected, lab
        assert estate.start + timedelta(days=60) <= lab["start_date"] <= lab["end_date"] < estate.end
        assert lab["size_per_day"] > 0 and lab["baseline_per_day"] > 0
        assert lab["relative_to_service"] >= 0.4 and lab["relative_to_resource_group"] >= 0.4
        meter = res[res["x_MeterName"] == lab["meter_name"]]
        if lab["kind"] == "new_cost":
            assert meter["day"].min() == lab["start_date"] and meter["day"].max() == lab["end_date"]
        on_start = meter[meter["day"] == lab["start_date"]]["EffectiveCost"].astype(float).sum()
        assert on_start >= 0.9 * lab["size_per_day"], lab


SIZES = [1_000, 2_500, 8_000, 15_000, 40_000]
SEEDS = [0, 42, 2024]
STARTS = [date(2024, 2, 1), date(2025, 6, 1), date(2025, 11, 1)]


@pytest.mark.parametrize("target_rows", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("start", STARTS, ids=str)
def test_any_size_seed_and_start_month_generates_a_consistent_estate(target_rows, seed, start):
    estate = generate_estate(seed=seed, start=start, months=13, target_rows=target_rows)
    _check_estate(estate, target_rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target_rows", "seed", "start"),
    [(150_000, 42, date(2025, 11, 1)), (150_000, 7, date(2024, 9, 1)), (300_000, 1234, date(2025, 3, 1))],
    ids=str,
)
def test_big_estates_generate_a_consistent_estate(target_rows, seed, start):
    estate = generate_estate(seed=seed, start=start, months=13, target_rows=target_rows)
    _check_estate(estate, target_rows)


def test_an_estate_without_commitments_has_null_commitment_columns():
    # Small estates often draw no reserved or savings-plan stream: this once crashed (empty dictionary).
    for seed in range(40):
        estate = generate_estate(seed=seed, start=date(2025, 11, 1), months=13, target_rows=8_000)
        if estate.costs["CommitmentDiscountId"].null_count == estate.costs.num_rows:
            break
    else:
        pytest.fail("no seed gave an estate without commitments")
    costs = estate.costs
    assert costs["CommitmentDiscountId"].null_count == costs.num_rows
    assert set(costs["x_PricingModel"].to_pylist()) <= {"OnDemand", "Spot"}
    _check_estate(estate, 8_000)


@pytest.mark.slow
def test_millions_of_rows_keep_anomaly_quantities_inside_money():
    # A subscription-sized anomaly on a cheap meter once needed > 9.2 million units in one row.
    estate = generate_estate(seed=42, start=date(2024, 3, 1), months=13, target_rows=3_000_000)
    assert estate.labels.num_rows >= 8
    assert pc.max(estate.costs["PricingQuantity"]).as_py() < Decimal(10**7)


# --- what the analytics evaluation measures: churn is no anomaly, every label is big in its own series
@pytest.fixture(scope="module")
def demo_estate():
    # The demo's shape: 13 months from the first of the month a year ago, the default size.
    return generate_estate(seed=42, start=date(2025, 11, 1), months=13, target_rows=150_000)


def _by_day(estate) -> pd.DataFrame:
    columns = ["ChargePeriodStart", "ResourceId", "ServiceName", "x_ResourceGroupName", "SubAccountId", "Tags"]
    df = estate.plain_costs().select([*columns, "EffectiveCost"]).to_pandas()
    df["day"] = (df["ChargePeriodStart"] - pd.Timestamp(estate.start, tz="UTC")).dt.days
    df["cost"] = df["EffectiveCost"].astype(float)
    df["team"] = df["Tags"].map(_team)
    return df


def _series(df: pd.DataFrame, column: str, ndays: int) -> pd.DataFrame:
    daily = df[df[column].notna()].groupby([column, "day"])["cost"].sum().unstack(fill_value=0.0)
    return daily.reindex(columns=range(ndays), fill_value=0.0)


@pytest.mark.parametrize("which", ["estate", "demo_estate"])
def test_unlabelled_churn_steps_stay_under_15_percent_of_service_and_resource_group(which, request):
    estate = request.getfixturevalue(which)
    df = _by_day(estate)
    ndays = (estate.end - estate.start).days
    labelled = estate.labels["resource_id"].to_pylist()
    res = df[df["x_ResourceGroupName"].notna() & ~df["ResourceId"].isin(labelled)]
    daily = res.groupby(["ResourceId", "day"])["cost"].sum().reset_index()
    span = daily.groupby("ResourceId")["day"].agg(["min", "max"])
    daily = daily.join(span, on="ResourceId")
    # A step is the resource's mean cost over its first (or last) week, on its first (or first absent) day.
    first = daily[daily["day"] < daily["min"] + 7].groupby("ResourceId")["cost"].mean()
    last = daily[daily["day"] > daily["max"] - 7].groupby("ResourceId")["cost"].mean()
    created = span[span["min"] > 0]
    deleted = span[span["max"] < ndays - 1]
    events = pd.concat(
        [
            pd.DataFrame({"day": created["min"], "cost": first[created.index]}),
            pd.DataFrame({"day": deleted["max"] + 1, "cost": last[deleted.index]}),
        ]
    )
    assert len(created) >= 10 and len(deleted) >= 10, "resources still come and go"
    meta = res.drop_duplicates("ResourceId").set_index("ResourceId")[["ServiceName", "x_ResourceGroupName"]]
    events = events.join(meta)
    for column in ("ServiceName", "x_ResourceGroupName"):
        series = _series(df, column, ndays)
        # Steps on the same day add up: that is what a detector sees.
        for (name, d), step in events.groupby([column, "day"])["cost"].sum().items():
            base = series.loc[name, max(d - 7, 0) : d - 1].mean()
            assert step <= 0.15 * base, (column, name, d, step, base)


@pytest.mark.parametrize("which", ["estate", "demo_estate"])
def test_every_label_is_at_least_30_percent_of_its_own_series(which, request):
    estate = request.getfixturevalue(which)
    df = _by_day(estate)
    ndays = (estate.end - estate.start).days
    column = {"service": "ServiceName", "resource_group": "x_ResourceGroupName", "subscription": "SubAccountId"}
    levels = {lab["level"] for lab in estate.labels.to_pylist()}
    assert {"subscription", "tag"} & levels
    for lab in estate.labels.to_pylist():
        series = _series(df, column.get(lab["level"], "team"), ndays).loc[lab["value"]]
        start = (lab["start_date"] - estate.start).days
        before = series[start - 28 : start - 1].mean()
        assert lab["baseline_per_day"] == pytest.approx(before, rel=0.02), lab
        assert lab["size_per_day"] >= 0.3 * before, lab
