"""The cost explorer's view as URL query parameters, so a view can be shared by copying the address."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from app.data import GRAINS, METRICS, known_dimension

CHARTS = ("area", "bar")
# Links shared before the grains were named daily / weekly / monthly said day / week / month: the URL is
# the one place they still arrive, so they are read here and nowhere else.
LEGACY_GRAINS = {"day": "daily", "week": "weekly", "month": "monthly"}


@dataclass
class ExplorerView:
    group_by: str = "service"
    grain: str = "daily"
    metric: str = "actual"
    chart: str = "area"
    start: dt.date | None = None
    end: dt.date | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)

    def to_params(self) -> dict[str, str | list[str]]:
        params: dict[str, str | list[str]] = {
            "group": self.group_by,
            "grain": self.grain,
            "metric": self.metric,
            "chart": self.chart,
        }
        if self.start:
            params["from"] = self.start.isoformat()
        if self.end:
            params["to"] = self.end.isoformat()
        for name, values in sorted(self.filters.items()):
            if values:
                params[f"f.{name}"] = list(values)
        return params

    @property
    def filter_key(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Hashable filters for cache keys."""
        return tuple((k, tuple(sorted(v))) for k, v in sorted(self.filters.items()) if v)


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def from_params(params: Mapping[str, list[str]]) -> ExplorerView:
    """Parse query parameters (name -> all values); anything unknown or malformed falls back to defaults."""

    def one(name: str, allowed, default: str) -> str:
        values = params.get(name) or []
        value = values[-1] if values else default
        return value if (allowed(value) if callable(allowed) else value in allowed) else default

    grain = one("grain", (*GRAINS, *LEGACY_GRAINS), "daily")
    view = ExplorerView(
        group_by=one("group", known_dimension, "service"),
        grain=LEGACY_GRAINS.get(grain, grain),
        metric=one("metric", METRICS, "actual"),
        chart=one("chart", CHARTS, "area"),
        start=_date((params.get("from") or [None])[-1]),
        end=_date((params.get("to") or [None])[-1]),
    )
    for name, values in params.items():
        if name.startswith("f.") and known_dimension(name[2:]):
            view.filters[name[2:]] = [v for v in values if v]
    return view


def read_query_params(query_params) -> ExplorerView:
    """From st.query_params (which keeps repeated keys: get_all)."""
    return from_params({name: query_params.get_all(name) for name in query_params})
