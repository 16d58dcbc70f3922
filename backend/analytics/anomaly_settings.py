"""Anomaly sensitivity, history window and minimum impacts per analysis level: validated, audited, read by analytics.

The environment (ANOMALY_SENSITIVITY, ANOMALY_HISTORY_DAYS, ANOMALY_MIN_COST_IMPACT,
ANOMALY_MIN_RELATIVE_IMPACT) gives every level's defaults; a level's stored value replaces its default. A change
takes effect on the next analytics run, which rescores the history once (the settings are part of the scoring
fingerprint, see backend.analytics.scoring).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from backend.analytics.detect import DetectorParams
from backend.analytics.series import LEVEL_COLUMN, TAG_PREFIX, TOTAL
from backend.auth import Principal, Role, require
from backend.config import Settings
from backend.mart import anomaly_settings as sql
from backend.mart.audit import record

log = logging.getLogger(__name__)

# Setting -> (DetectorParams field, lowest allowed, highest allowed, what it means).
FIELDS = {
    "sensitivity": ("sensitivity", 0.5, 20.0, "robust z-score a day must exceed (lower = more alerts)"),
    "history_days": ("history_days", 14, 365, "days of history the baseline learns from"),
    "min_cost_impact": ("min_cost_impact", 0.0, 1e9, "minimum extra cost per day, billing currency"),
    "min_relative_impact": ("min_relative_impact", 0.0, 100.0, "minimum extra cost relative to the expected value"),
}


def levels(settings: Settings) -> list[str]:
    """The levels anomalies are detected at (ANOMALY_LEVELS), and the total."""
    return [TOTAL, *[lv for lv in settings.anomaly_levels if lv != TOTAL]]


def defaults(settings: Settings) -> DetectorParams:
    return DetectorParams(
        history_days=settings.anomaly_history_days,
        sensitivity=settings.anomaly_sensitivity,
        min_cost_impact=settings.anomaly_min_cost_impact,
        min_relative_impact=settings.anomaly_min_relative_impact,
    )


def _check_level(level: str) -> str:
    level = str(level or "").strip()
    if level == TOTAL or level in LEVEL_COLUMN or (level.startswith(TAG_PREFIX) and level[len(TAG_PREFIX) :]):
        return level
    raise ValueError(f"unknown analysis level {level!r}: use total, {', '.join(LEVEL_COLUMN)} or tag:<key>")


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Known settings only, each a number in its range; None or "" = the default."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FIELDS:
            raise ValueError(f"unknown anomaly setting {name!r}: use {', '.join(FIELDS)}")
        if value is None or value == "":
            out[name] = None
            continue
        _, low, high, meaning = FIELDS[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number ({meaning}), not {value!r}") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(f"{name} must be between {low:g} and {high:g} ({meaning}), not {value!r}")
        if name == "history_days":
            if number != int(number):
                raise ValueError(f"history_days must be a whole number of days, not {value!r}")
            number = int(number)
        out[name] = number
    return out


def save(owner: sa.Engine, level: str, *, actor: Principal, **values: Any) -> dict[str, Any]:
    """Set a level's settings (the ones not given return to the default); needs the editor role; audited in the
    same transaction. Returns what was stored."""
    require(actor, Role.editor, "Changing anomaly settings")
    level = _check_level(level)
    data = validate(values)
    with owner.begin() as conn:
        sql.save(conn, level, data, who=actor.who)
        record(conn, actor, "anomaly.settings", f"level {level}", data)
    log.info("anomaly settings of %s set by %s: %s", level, actor.who, data)
    return data


def reset(owner: sa.Engine, level: str, *, actor: Principal) -> bool:
    """Every setting of the level back to the environment's default; editor role; audited."""
    require(actor, Role.editor, "Changing anomaly settings")
    level = _check_level(level)
    with owner.begin() as conn:
        had = sql.clear(conn, level)
        record(conn, actor, "anomaly.settings.reset", f"level {level}", {"had_settings": had})
    return had


def stored(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    return sql.read(engine)


def params_by_level(
    settings: Settings, saved: Mapping[str, Mapping[str, Any]], level_names
) -> dict[str, DetectorParams]:
    """The detector's parameters for every level: the environment's defaults with the level's saved values."""
    base = defaults(settings)
    out = {}
    for level in level_names:
        own = {FIELDS[k][0]: v for k, v in (saved.get(level) or {}).items() if k in FIELDS and v is not None}
        if "history_days" in own:
            own["history_days"] = int(own["history_days"])
        out[level] = dataclasses.replace(base, **{k: (float(v) if k != "history_days" else v) for k, v in own.items()})
    return out


def effective(settings: Settings, saved: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per level: each setting's value in effect and whether it is the level's own or the default (for the page)."""
    names = list(dict.fromkeys([*levels(settings), *saved]))
    params = params_by_level(settings, saved, names)
    rows = []
    for level in names:
        own = saved.get(level) or {}
        row: dict[str, Any] = {"level": level}
        for name, (field, *_rest) in FIELDS.items():
            row[name] = getattr(params[level], field)
            row[f"{name}_set"] = own.get(name) is not None
        row["updated_by"], row["updated_at"] = own.get("updated_by"), own.get("updated_at")
        rows.append(row)
    return rows
