"""Which charge days an analytics run scores for anomalies: unscored or changed days, the days they feed, the recent window.

A run scores, per billing currency:

- every day gold holds that the mart's record (mart.anomaly_scored_days) lacks: the first run, a backfill, an
  imported older month;
- every day whose gold rows changed since it was scored (re-rated, re-imported), or that was scored under
  other settings (levels, metrics, detector tunables): the record keeps a fingerprint of both;
- the days such a day can change (`reach`): it is history for the baselines of the `history_span` days after
  it, a level shift it reveals there re-anchors the baselines of up to `history_span` days more, and it can
  confirm a level shift (re-anchoring) or lengthen an alert run (spike -> level_shift) of the `lookahead_span`
  days before it;
- the last ANOMALY_LOOKBACK_DAYS, always (late data the fingerprints cannot tell apart, and the window users
  expect to be fresh).

So a day's cost of scoring is paid when the day arrives or changes, not on every run: a run with no new data
scores the lookback window only, and a daily increment scores the new day plus its neighbours. The detector
reads `context_days` of history before the first day it scores, which is enough for its verdicts to equal
those of a run over the whole history (see `context_days`).

Future data. Scoring the whole history at once gives a past day no more of its future than the method uses
anyway: each day's baseline comes from the days before it only (detect.baseline); the exceptions are that a
level shift is confirmed by the min_history_days after it starts (detect._reanchor) and that an alert run of
shift_days or more is called a level_shift. A day's verdict therefore settles once `lookahead_span` later days
are in, and the runs rescore exactly those days when they arrive: the first run over 13 months leaves the
verdicts that daily runs over the same months end with (tests/analytics/test_history.py checks it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

import numpy as np

from backend.analytics.detect import DetectorParams


def history_span(params: DetectorParams) -> int:
    """Days of history the baseline of one day reads (whole weeks, as `DetectorParams.weeks`)."""
    return int(np.ceil(params.history_days / 7)) * 7


def lookahead_span(params: DetectorParams) -> int:
    """How far back a new day can change verdicts: a level shift is confirmed by the min_history_days after its
    start (detect._reanchor), and an alert run's kind by its length (shift_days <= that)."""
    return max(params.min_history_days, 7, params.shift_days)


def reach(params: DetectorParams) -> tuple[int, int]:
    """(days before, days after) a new or changed day whose verdicts it can change. After: its own span of
    history, plus the span a level shift found there re-anchors (the segment baseline equals the rolling one
    from `history_span` days into the shift on). A longer chain (shift upon shift, each within a span of the
    last) is left to the runs that score those days later."""
    return lookahead_span(params), 2 * history_span(params)


def context_days(params: DetectorParams) -> int:
    """Days before the first scored day that the detector reads.

    The baseline needs `history_span` days; a re-anchored level shift replaces the rolling baseline for up to
    another `history_span` days after it starts, and is itself found from alerts that need a baseline: three
    spans plus the lookahead cover that chain, so truncating the history there leaves the scored days' verdicts
    as a run over the whole history gives them (the detector is causal apart from the lookahead)."""
    return 3 * history_span(params) + lookahead_span(params)


def config_fingerprint(
    levels: Iterable[str],
    metrics: Iterable[str],
    params: DetectorParams,
    per_level: Mapping[str, DetectorParams] | None = None,
) -> str:
    """What a day's verdicts depend on besides its data: changing any of it rescores the history once.
    `per_level` holds the levels whose settings (ops.anomaly_settings) differ from `params`; levels on the
    defaults add nothing, so an install without such settings keeps its fingerprint."""
    config: dict = {"levels": sorted(levels), "metrics": sorted(metrics), "detector": asdict(params)}
    own = {level: asdict(p) for level, p in sorted((per_level or {}).items()) if p != params}
    if own:
        config["per_level"] = own
    text = json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_fingerprint(row: Mapping, metrics: Iterable[str]) -> str:
    """A (currency, day) coverage row's fingerprint: its row count, how many rows carry each metric, and the
    order-independent hash sum of its rows' contents (`content`, from run.metric_coverage)."""
    counts = ",".join(f"{m}={int(row[m] or 0)}" for m in sorted(metrics))
    return f"{int(row['rows'])};{counts};{int(row['content'] or 0)}"


@dataclass(frozen=True)
class ScoringPlan:
    """The days one run scores per currency, where the detector's history starts for each, and why."""

    days: dict[str, frozenset[date]]
    context_start: dict[str, date]
    fingerprints: dict[tuple[str, date], str]
    # Recorded days gold no longer holds (a month removed or replaced by fewer days): their open anomalies go.
    gone: list[tuple[str, date]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def scored(self) -> list[tuple[str, date]]:
        return sorted((cur, day) for cur, days in self.days.items() for day in days)


def plan_scoring(
    coverage: list[dict],
    recorded: Mapping[tuple[str, date], tuple[str, str]],
    *,
    metrics: list[str],
    config: str,
    params: DetectorParams,
    lookback_days: int,
    end: date,
    as_of: date | None = None,
) -> ScoringPlan:
    """Which days to score, from gold's coverage rows (currency, charge_date, rows, content, one count per metric)
    and the recorded {(currency, day): (data_fingerprint, config_fingerprint)} of earlier runs. A run `as_of` a
    day sees gold up to it only, so recorded days after it are not gone."""
    start = min(r["charge_date"] for r in coverage)
    window_start = end - timedelta(days=lookback_days - 1)
    behind, ahead = reach(params)
    fingerprints = {(r["currency"], r["charge_date"]): data_fingerprint(r, metrics) for r in coverage}
    counts = dict.fromkeys(("new", "changed", "reconfigured", "window", "neighbours"), 0)
    days: dict[str, frozenset[date]] = {}
    context: dict[str, date] = {}
    for cur in sorted({c for c, _ in fingerprints}):
        present = sorted(d for c, d in fingerprints if c == cur)
        dirty = []
        for day in present:
            was = recorded.get((cur, day))
            if was is None:
                counts["new"] += 1
            elif was[0] != fingerprints[(cur, day)]:
                counts["changed"] += 1
            elif was[1] != config:
                counts["reconfigured"] += 1
            else:
                continue
            dirty.append(day)
        chosen = set(dirty)
        window = {d for d in present if d >= window_start} - chosen
        counts["window"] += len(window)
        chosen |= window
        # The days each dirty day feeds, as one sweep over the sorted days (a first run's dirty days are all of
        # them: no per-day set building).
        fed = _within(present, dirty, behind=behind, ahead=ahead) - chosen
        counts["neighbours"] += len(fed)
        chosen |= fed
        if chosen:
            days[cur] = frozenset(chosen)
            context[cur] = max(start, min(chosen) - timedelta(days=context_days(params)))
    gone = sorted(k for k in recorded if (as_of is None or k[1] <= as_of) and k not in fingerprints)
    counts["scored"] = sum(len(d) for d in days.values())
    counts["gone"] = len(gone)
    scored = {k: fingerprints[k] for cur, ds in days.items() for k in ((cur, d) for d in ds)}
    return ScoringPlan(days=days, context_start=context, fingerprints=scored, gone=gone, counts=counts)


def _within(present: list[date], dirty: list[date], *, behind: int, ahead: int) -> set[date]:
    """The days of `present` within [d - behind, d + ahead] of some day d of `dirty` (both sorted)."""
    if not dirty:
        return set()
    p = np.array(present, dtype="datetime64[D]")
    d = np.array(dirty, dtype="datetime64[D]")
    # For each present day: the nearest dirty day at or after it, and the nearest at or before it.
    after = np.searchsorted(d, p, side="left")
    before = np.searchsorted(d, p, side="right") - 1
    ok = np.zeros(len(p), dtype=bool)
    has_after = after < len(d)
    ok[has_after] |= (d[after[has_after]] - p[has_after]).astype(int) <= behind
    has_before = before >= 0
    ok[has_before] |= (p[has_before] - d[before[has_before]]).astype(int) <= ahead
    return {present[i] for i in np.flatnonzero(ok)}
