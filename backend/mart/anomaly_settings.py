"""The mart SQL of anomaly settings per analysis level (ops.anomaly_settings): read them all, save or clear one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

COLUMNS = ("sensitivity", "history_days", "min_cost_impact", "min_relative_impact")


def read(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """{level: {column: value or None, updated_by, updated_at}}; a None column is the environment's default."""
    sql = f"SELECT level, {', '.join(COLUMNS)}, updated_by, updated_at FROM ops.anomaly_settings ORDER BY level"
    with engine.connect() as conn:
        return {r["level"]: {k: v for k, v in r.items() if k != "level"} for r in conn.execute(sa.text(sql)).mappings()}


def save(conn: sa.Connection, level: str, values: Mapping[str, Any], *, who: str | None) -> None:
    """Replace the level's row (columns not in `values` go back to the default)."""
    row = {c: values.get(c) for c in COLUMNS}
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS)
    conn.execute(
        sa.text(
            f"INSERT INTO ops.anomaly_settings (level, {', '.join(COLUMNS)}, updated_by)"
            f" VALUES (:level, {', '.join(':' + c for c in COLUMNS)}, :who)"
            f" ON CONFLICT (level) DO UPDATE SET {sets}, updated_by = EXCLUDED.updated_by, updated_at = now()"
        ),
        {"level": level, **row, "who": who},
    )


def clear(conn: sa.Connection, level: str) -> bool:
    """Drop the level's row (every setting back to the default); whether there was one."""
    return bool(conn.execute(sa.text("DELETE FROM ops.anomaly_settings WHERE level = :l"), {"l": level}).rowcount)
