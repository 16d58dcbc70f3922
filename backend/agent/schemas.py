"""Argument schemas of the agent's tools: what an LLM sees as each tool's JSON schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

PERIOD = (
    "last_7_days, last_30_days, last_N_days, yesterday, this_week, last_week, this_month, last_month, this_quarter, "
    "last_quarter, this_year, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DD..YYYY-MM-DD (inclusive); relative to the latest day "
    "with data"
)
DIMENSION = (
    "service, service_category, subscription, resource_group, resource, region, meter, pricing_model, "
    "charge_category, billing_account, provider (the cloud), service_provider, tag:<key> (e.g. tag:env), or total"
)
ANOMALY_PERIOD = "all (default) or a period: "
FILTERS = 'optional filters {dimension: member name}, e.g. {"subscription": "Production"}'


class NoArgs(BaseModel):
    pass


class DescribeTable(BaseModel):
    table: str = Field(description="table or view name, e.g. mart.v_cost_daily_summary")


class RunSql(BaseModel):
    sql: str = Field(description="one PostgreSQL SELECT over mart tables/views")


class ListValues(BaseModel):
    dimension: str = Field(description=DIMENSION)
    search: str = Field(default="", description="case-insensitive substring")


class CostBreakdown(BaseModel):
    dimension: str = Field(
        default="service", description=DIMENSION + "; or day, week, month to rank days (e.g. the most expensive day)"
    )
    period: str = Field(default="last_30_days", description=PERIOD)
    top_n: int = Field(default=10, ge=1, le=100)
    metric: Literal["actual", "amortized"] = Field(
        default="actual", description="actual = billed, amortized = effective"
    )
    filters: dict[str, str] | None = Field(default=None, description=FILTERS)


class CostTrend(BaseModel):
    period: str = Field(default="last_30_days", description=PERIOD)
    grain: Literal["daily", "weekly", "monthly"] = "daily"
    dimension: str = Field(default="", description="optional split: " + DIMENSION)
    top_n: int = Field(default=5, ge=1, le=20)
    metric: Literal["actual", "amortized"] = "actual"
    filters: dict[str, str] | None = Field(default=None, description=FILTERS)


class ComparePeriods(BaseModel):
    period: str = Field(default="this_month", description="the period of interest: " + PERIOD)
    baseline: str = Field(default="previous", description="'previous' (the period just before) or a period")
    dimension: str = Field(default="service", description=DIMENSION)
    top_n: int = Field(default=10, ge=1, le=100)
    metric: Literal["actual", "amortized"] = "actual"
    filters: dict[str, str] | None = Field(default=None, description=FILTERS)


class ExplainCostChange(BaseModel):
    day: str = Field(default="latest", description="YYYY-MM-DD, latest, yesterday or a weekday name")
    dimension: str = Field(default="", description="optional: service, subscription, resource_group, region, ...")
    value: str = Field(default="", description="the member of that dimension, e.g. Storage")
    metric: Literal["actual", "amortized"] = "actual"


class Forecast(BaseModel):
    period: str = Field(default="this_month", description="this_month, next_month, this_quarter or next_30_days")
    dimension: str = Field(default="", description="optional scope: service, subscription, resource_group")
    value: str = Field(default="", description="the member, e.g. Storage")
    metric: Literal["actual", "amortized"] = "actual"


class BudgetStatus(BaseModel):
    name: str = Field(default="", description="optional budget name (substring); empty = all budgets")


class UntaggedShare(BaseModel):
    tag_key: str = Field(default="", description="tag key such as env, owner, cost_center; empty = every key")
    period: str = Field(default="last_30_days", description=PERIOD)


class ListAnomalies(BaseModel):
    period: str = Field(default="all", description=ANOMALY_PERIOD + PERIOD)
    dimension: str = Field(default="", description="optional level: service, subscription, resource_group, tag:<key>")
    value: str = Field(default="", description="optional member of that level, e.g. Storage")
    kind: str = Field(default="", description="optional: spike, drop, level_shift or new_cost")
    status: str = Field(default="", description="optional: open, expected or resolved")
    top_n: int = Field(default=50, ge=1, le=1000)
    metric: Literal["actual", "amortized"] = "actual"


class CountAnomalies(BaseModel):
    period: str = Field(default="all", description=ANOMALY_PERIOD + PERIOD)
    group_by: str = Field(
        default="",
        description="optional: level, member, kind, status, day, month, or a level name (service, subscription, "
        "resource_group) to count per member of it",
    )
    dimension: str = Field(default="", description="optional level filter: service, subscription, resource_group")
    value: str = Field(default="", description="optional member of that level")
    kind: str = Field(default="", description="optional: spike, drop, level_shift or new_cost")
    status: str = Field(default="", description="optional: open, expected or resolved")
    metric: Literal["actual", "amortized"] = "actual"


class AverageCost(BaseModel):
    period: str = Field(default="last_30_days", description=PERIOD)
    grain: Literal["daily", "weekly", "monthly"] = Field(default="daily", description="average per day, week or month")
    metric: Literal["actual", "amortized"] = "actual"
    filters: dict[str, str] | None = Field(default=None, description=FILTERS)


class SavingsSummary(BaseModel):
    period: str = Field(default="last_month", description=PERIOD)


class WasteList(BaseModel):
    kind: str = Field(
        default="all",
        description="all, orphans (unattached_disk, idle_public_ip, stopped_vm, or one of them), zero_usage "
        "(cost without usage), started or stopped (resources whose cost started / stopped)",
    )
    month: str = Field(default="last_month", description="the month: this_month, last_month or YYYY-MM")
    top_n: int = Field(default=25, ge=1, le=200)
