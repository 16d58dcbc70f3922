"""Daily cost series per analysis level (subscription, resource group, service, tag) and currency, in pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = {"actual": "actual_cost", "amortized": "amortized_cost"}
# The level an anomaly is explained by: each level's contributors come from the column one level down.
LEVEL_COLUMN = {"subscription": "subscription_id", "resource_group": "resource_group", "service": "service_name"}
CHILD_COLUMN = {"subscription": "resource_group", "resource_group": "resource_id", "service": "resource_id"}
TAG_PREFIX = "tag:"
TOTAL = "total"


def level_column(level: str) -> str:
    """The cost-frame column holding a level's members ("tag:team" -> "tag_team")."""
    if level in LEVEL_COLUMN:
        return LEVEL_COLUMN[level]
    if level.startswith(TAG_PREFIX):
        return "tag_" + level[len(TAG_PREFIX) :]
    if level == TOTAL:
        return TOTAL
    raise ValueError(f"unknown analysis level {level!r}")


def level_series(costs: pd.DataFrame, levels: list[str], metrics: list[str]) -> pd.DataFrame:
    """Long frame (level, member, metric, currency, charge_date, cost) of daily totals per billing currency (a
    frame without billing_currency is one unknown currency, ""); every member gets every day of the frame's date
    range in each currency it has (missing days are zero cost), so a new member has a zero history, not none.

    The cost is NaN where the metric is not available: a member's day with a row lacking it, and every member's
    day on which no row of the currency carries it (as backend.analytics.run reads gold)."""
    columns = ["level", "member", "metric", "currency", "charge_date", "cost"]
    dates = pd.date_range(costs["charge_date"].min(), costs["charge_date"].max(), freq="D")
    if "billing_currency" in costs.columns:
        currency = costs["billing_currency"].fillna("").astype(str)
    else:
        currency = pd.Series("", index=costs.index)
    day = pd.to_datetime(costs["charge_date"])
    unavailable = {}
    for metric in metrics:
        carried = costs[METRICS[metric]].notna().groupby([currency, day]).any()
        # (currency, day) with rows, none carrying the metric; every day of a currency no row of which carries it.
        off = set(carried[~carried].index)
        for cur, any_day in carried.groupby(level=0).any().items():
            if not any_day:
                off |= {(cur, d) for d in dates}
        unavailable[metric] = list(off)
    frames = []
    for level in levels:
        col = level_column(level)
        if col != TOTAL and col not in costs.columns:
            continue
        keys = costs[col].fillna("").astype(str) if col != TOTAL else pd.Series("", index=costs.index)
        by = [keys.rename("member"), currency.rename("currency"), day.rename("charge_date")]
        for metric in metrics:
            value = costs[METRICS[metric]].astype(float)
            daily = value.groupby(by).sum()
            daily[value.isna().groupby(by).any()] = np.nan  # a sum over a row lacking the metric is no total
            wide = daily.unstack("charge_date").reindex(columns=dates)
            present = value.groupby(by).size().unstack("charge_date").reindex(columns=dates).notna()
            wide = wide.where(present, 0.0)  # a day without rows costs nothing
            long = wide.stack(future_stack=True).rename("cost").reset_index()
            long.columns = ["member", "currency", "charge_date", "cost"]
            if unavailable[metric]:
                off = pd.MultiIndex.from_arrays([long["currency"], long["charge_date"]]).isin(unavailable[metric])
                long.loc[off, "cost"] = np.nan
            long.insert(0, "metric", metric)
            long.insert(0, "level", level)
            frames.append(long[columns])
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["cost"] = out["cost"].astype(np.float64)
    return out
