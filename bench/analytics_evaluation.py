"""Scoring detectors and forecasters against the synthetic estate's labelled anomalies (pure pandas)."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TAG_KEYS = ("team", "env", "costcenter", "app")


def _canonical_tags(raw: str | None) -> dict[str, str]:
    """Tag JSON as gold normalises it: keys trimmed and lower-cased, values trimmed and lower-cased."""
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except ValueError:
        return {}
    return {str(k).strip().lower(): str(v).strip().lower() for k, v in tags.items()}


def estate_cost_frame(costs: pa.Table) -> pd.DataFrame:
    """A synthetic estate's FOCUS rows aggregated to the gold cost_daily grain the analytics read (plus tag_<key>
    columns per canonical tag key), so the evaluation does not depend on the whole pipeline."""
    cols = {
        "charge_date": pc.cast(costs["ChargePeriodStart"], pa.date32()),
        "subscription_id": costs["SubAccountId"],
        "resource_group": costs["x_ResourceGroupName"],
        "service_name": costs["ServiceName"],
        "resource_id": costs["ResourceId"],
        "meter_name": costs["x_MeterName"],
        "billing_currency": costs["BillingCurrency"],
        "tags": costs["Tags"],
        "actual_cost": pc.cast(costs["BilledCost"], pa.float64()),
        "amortized_cost": pc.cast(costs["EffectiveCost"], pa.float64()),
    }
    frame = pa.table({k: (v.cast(pa.string()) if pa.types.is_dictionary(v.type) else v) for k, v in cols.items()})
    keys = [
        "charge_date",
        "subscription_id",
        "resource_group",
        "service_name",
        "resource_id",
        "meter_name",
        "billing_currency",
        "tags",
    ]
    grouped = frame.group_by(keys, use_threads=False).aggregate([("actual_cost", "sum"), ("amortized_cost", "sum")])
    df = grouped.to_pandas().rename(columns={"actual_cost_sum": "actual_cost", "amortized_cost_sum": "amortized_cost"})
    for key in ("subscription_id", "resource_group", "service_name", "resource_id", "meter_name", "billing_currency"):
        df[key] = df[key].fillna("")
    parsed = {raw: _canonical_tags(raw) for raw in df["tags"].dropna().unique()}
    for key in TAG_KEYS:
        df[f"tag_{key}"] = df["tags"].map(
            lambda raw, k=key: parsed.get(raw, {}).get(k, "untagged") if raw else "untagged"
        )
    df["charge_date"] = pd.to_datetime(df["charge_date"])
    return df.drop(columns=["tags"])


def truth_members(labels: pd.DataFrame, costs: pd.DataFrame, level: str) -> pd.DataFrame:
    """Every label mapped to the member of `level` it moves (a service anomaly also moves its resource group)."""
    out = labels.copy()
    if level == "service":
        out["member"] = out["service_name"]
    elif level == "resource_group":
        out["member"] = out["resource_group"]
    elif level == "subscription":
        out["member"] = out["subscription_id"]
    elif level.startswith("tag:"):
        col = "tag_" + level[4:]
        owner = costs.drop_duplicates("resource_id").set_index("resource_id")[col]
        out["member"] = out["resource_id"].map(owner).fillna("untagged")
    else:
        raise ValueError(level)
    out["start_date"] = pd.to_datetime(out["start_date"])
    out["end_date"] = pd.to_datetime(out["end_date"])
    return out


def label_scope(truth: pd.DataFrame, series: pd.DataFrame, *, min_relative: float = 0.4, days: int = 28) -> pd.Series:
    """Which labels a detector at this level can be asked to find: the label's extra cost per day is at least
    `min_relative` x its member's mean daily cost over the `days` before it starts.

    The estate sizes every label at >= 40% of that baseline for its service, its resource group and its labelled
    dimension; a resource group's spike is a rounding error in a big subscription, so at the subscription and tag
    levels only the labels sized for them (or big enough anyway) count towards recall. `series` holds the level's
    daily (member, charge_date, cost) rows."""
    costs = series.assign(charge_date=pd.to_datetime(series["charge_date"])).set_index(["member", "charge_date"])
    costs = costs["cost"].sort_index()
    keep = []
    for lab in truth.itertuples():
        start = pd.Timestamp(lab.start_date)
        try:
            before = costs.loc[lab.member].loc[start - timedelta(days=days) : start - timedelta(days=1)]
        except KeyError:
            before = pd.Series(dtype=float)
        base = float(before.mean()) if len(before) else 0.0
        keep.append(lab.size_per_day >= min_relative * base)
    return pd.Series(keep, index=truth.index, dtype=bool)


def alert_events(alerts: pd.DataFrame) -> pd.DataFrame:
    """Consecutive alert days of one series merged into events (a level shift alerts for several days)."""
    if alerts.empty:
        return pd.DataFrame(columns=["member", "first", "last"])
    rows = []
    for member, group in alerts.groupby("member"):
        days = np.sort(pd.to_datetime(group["charge_date"]).unique())
        start = prev = days[0]
        for day in days[1:]:
            if day - prev > np.timedelta64(1, "D"):
                rows.append((member, start, prev))
                start = day
            prev = day
        rows.append((member, start, prev))
    return pd.DataFrame(rows, columns=["member", "first", "last"])


def score_detection(alerts: pd.DataFrame, truth: pd.DataFrame, *, max_delay_days: int = 1) -> dict:
    """Precision over alert events, recall over labels (detected within `max_delay_days` of the start), delays.

    An event overlapping any label is a true one; recall counts only labels with a true `in_scope` (all of them
    when the column is absent)."""
    events = alert_events(alerts)
    hit_events = 0
    for ev in events.itertuples():
        same = truth[truth["member"] == ev.member]
        # An event is explained by a label when it overlaps the label's window (plus one day of tolerance).
        if ((same["start_date"] <= ev.last) & (same["end_date"] + timedelta(days=1) >= ev.first)).any():
            hit_events += 1
    delays = []
    detected = 0
    if "in_scope" in truth.columns:
        truth = truth[truth["in_scope"]]
    for lab in truth.itertuples():
        mine = alerts[(alerts["member"] == lab.member)]
        days = pd.to_datetime(mine["charge_date"])
        inside = days[(days >= lab.start_date) & (days <= lab.end_date)]
        delay = (inside.min() - lab.start_date).days if len(inside) else None
        delays.append(delay)
        if delay is not None and delay <= max_delay_days:
            detected += 1
    precision = hit_events / len(events) if len(events) else 1.0
    recall = detected / len(truth) if len(truth) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    found = [d for d in delays if d is not None]
    return {
        "labels": len(truth),
        "events": len(events),
        "false_events": len(events) - hit_events,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_delay_days": float(np.mean(found)) if found else None,
        "max_delay_days": int(max(found)) if found else None,
        "missed": int(sum(d is None or d > max_delay_days for d in delays)),
    }


def estate_gold(estate_costs: pa.Table, *, tag_keys: tuple[str, ...] = ("team",), run_id: str = "estate") -> dict:
    """A synthetic estate as the gold tables analytics reads ({table name: Arrow table}, the columns it reads
    plus charge_month): cost_daily at its grain, cost_by_tag and resource_tags for `tag_keys`, tags canonical
    as gold makes them. Lets the evaluation run the real analytics step (Spark, the mart) without the whole
    medallion."""
    from backend.lake.catalog import GOLD_COST_BY_TAG, GOLD_COST_DAILY, GOLD_RESOURCE_TAGS, MONEY

    frame = estate_cost_frame(estate_costs)
    frame["charge_month"] = frame["charge_date"].dt.strftime("%Y-%m")
    frame["charge_date"] = frame["charge_date"].dt.date
    money = {"actual_cost": MONEY, "amortized_cost": MONEY}

    def table(df: pd.DataFrame, columns: list[str]) -> pa.Table:
        out = pa.Table.from_pandas(df[columns], preserve_index=False)
        for name, typ in money.items():
            if name in columns:
                # Through a decimal of the estate's precision: a float cast straight to MONEY can round.
                exact = pc.cast(pc.round(out[name], 6), pa.decimal128(28, 6))
                out = out.set_column(out.schema.get_field_index(name), name, pc.cast(exact, typ))
        return out.replace_schema_metadata(None)

    from backend.analytics.run import COST_COLUMNS  # the columns the analytics step reads from gold

    daily_columns = [*COST_COLUMNS, "charge_month"]
    tables = {GOLD_COST_DAILY.name: table(frame, daily_columns)}
    by_tag, resource_tags = [], []
    for key in tag_keys:
        col = f"tag_{key}"
        grouped = (
            frame.groupby(["charge_date", "subscription_id", col, "billing_currency", "charge_month"], as_index=False)[
                ["actual_cost", "amortized_cost"]
            ]
            .sum()
            .rename(columns={col: "tag_value"})
            .assign(tag_key=key)
        )
        by_tag.append(grouped)
        owners = frame.drop_duplicates("resource_id")
        owners = owners[owners[col] != "untagged"]
        resource_tags.append(
            pd.DataFrame({"resource_id": owners["resource_id"], "tag_key": key, "tag_value": owners[col]})
        )
    if tag_keys:
        tag_columns = ["charge_date", "subscription_id", "tag_key", "tag_value", "billing_currency"]
        tables[GOLD_COST_BY_TAG.name] = table(
            pd.concat(by_tag, ignore_index=True), [*tag_columns, "actual_cost", "amortized_cost", "charge_month"]
        )
        tags = pd.concat(resource_tags, ignore_index=True).assign(run_id=run_id)
        tables[GOLD_RESOURCE_TAGS.name] = table(tags, ["resource_id", "tag_key", "tag_value", "run_id"])
    return tables
