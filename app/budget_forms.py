"""The Budgets page's adapters: a person's form checked in their words, budget CRUD, burn and alert history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa

from app.data import rows_frame
from backend.analytics import budgets as budget_store
from backend.auth import Principal
from backend.mart import analytics, budgets_sql

BUDGET_SCOPES = budget_store.SCOPES
BUDGET_PERIODS = budget_store.PERIODS
period_bounds = budgets_sql.period_bounds


class BudgetError(ValueError):
    """A budget the user must fix (message is shown as is)."""


def _form_problem(values: Mapping[str, Any]) -> str | None:
    """What a person typed wrong, in their words; backend.analytics.budgets.validate stays the authority."""
    name = str(values.get("name") or "").strip()
    scope = values.get("scope_type") or "total"
    if not name:
        return "Give the budget a name."
    if len(name) > 120:
        return "Keep the name under 120 characters."
    if scope != "total" and not str(values.get("scope_value") or "").strip():
        return f"Pick the {scope.replace('_', ' ')} this budget covers (the scope value)."
    if scope == "tag" and not str(values.get("tag_key") or "").strip():
        return "Pick the tag key for a tag budget."
    try:
        amount = float(values.get("amount") or 0)
    except (TypeError, ValueError):
        return "The amount must be a number."
    if amount <= 0:
        return "The amount must be greater than zero."
    if len(str(values.get("currency") or "").strip()) != 3:
        return "Currency must be a 3-letter code such as EUR or USD."
    if not values.get("actual_thresholds"):
        return "Pick at least one alert threshold."
    return None


def _budget_values(values: Mapping[str, Any]) -> dict[str, Any]:
    if problem := _form_problem(values):
        raise BudgetError(problem)
    scope = values.get("scope_type") or "total"
    clean = {
        "name": str(values["name"]).strip(),
        "scope_type": scope,
        "scope_value": "" if scope == "total" else str(values["scope_value"]).strip(),
        "tag_key": str(values.get("tag_key") or "").strip() if scope == "tag" else None,
        "metric": values.get("metric") or "actual",
        "amount": float(values["amount"]),
        "currency": str(values["currency"]).strip().upper(),
        "period": values.get("period") or "monthly",
        "actual_thresholds": list(values["actual_thresholds"]),
        "forecast_thresholds": list(values.get("forecast_thresholds") or [100]),
        "enabled": bool(values.get("enabled", True)),
        # More dimensions than the scope (backend.analytics.budgets.clean_filters checks them).
        "filters": dict(values.get("filters") or {}),
    }
    if values.get("webhook_url"):  # empty on edit = keep the stored one (the page never shows it)
        clean["webhook_url"] = str(values["webhook_url"]).strip()
    return clean


def _budget_call(fn, *args: Any, actor: Principal, values: dict[str, Any]) -> Any:
    name = values["name"]
    try:
        return fn(*args, actor=actor, **values)
    except sa.exc.IntegrityError as exc:
        if "budgets_name_key" in str(exc.orig) or "unique" in str(exc.orig).lower():
            raise BudgetError(f"A budget named {name!r} already exists; pick another name.") from exc
        raise BudgetError(f"The database refused this budget: {str(exc.orig).splitlines()[0]}") from exc
    except LookupError as exc:
        raise BudgetError(f"Budget {name!r} no longer exists.") from exc
    except ValueError as exc:
        raise BudgetError(f"This budget is not valid: {exc}.") from exc


def list_budgets(owner: sa.Engine) -> pd.DataFrame:
    """Every budget (owner engine: backend list_budgets reads webhook_url, which the reader may not see);
    the webhook URL is replaced by whether one is set, since it may carry a token."""
    rows = budgets_sql.list_budgets(owner)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["budget_id", "name", "scope_type", "scope_value", "tag_key", "metric", "amount",
                                     "currency", "period", "actual_thresholds", "forecast_thresholds", "enabled",
                                     "has_webhook", "filters", "scope_candidates"])  # fmt: skip
    frame["has_webhook"] = frame.pop("webhook_url").notna() if "webhook_url" in frame else False
    frame["amount"] = frame["amount"].astype(float)
    return frame


def create_budget(owner: sa.Engine, values: Mapping[str, Any], *, actor: Principal) -> int:
    clean = _budget_values(values)
    return _budget_call(budget_store.create_budget, owner, actor=actor, values=clean)


def update_budget(owner: sa.Engine, budget_id: int, values: Mapping[str, Any], *, actor: Principal) -> int:
    clean = _budget_values(values)
    _budget_call(budget_store.update_budget, owner, budget_id, actor=actor, values=clean)
    return budget_id


def delete_budget(owner: sa.Engine, budget_id: int, *, actor: Principal) -> int:
    budget_store.delete_budget(owner, budget_id, actor=actor)
    return budget_id


def budget_burn(engine: sa.Engine, budget: Mapping[str, Any], *, as_of: dt.date) -> pd.DataFrame:
    """Spend per day of the budget's current period and the running total: day, cost, cumulative."""
    frame = rows_frame(analytics.budget_burn(engine, budget, as_of=as_of), analytics.DailyCost, dates=("day",))
    frame["cumulative"] = frame["cost"].cumsum()
    return frame


def budget_alerts(engine: sa.Engine, *, limit: int = 200) -> pd.DataFrame:
    """The alert history the budgets step records."""
    return rows_frame(analytics.budget_alerts(engine, limit=limit), analytics.BudgetAlert)
