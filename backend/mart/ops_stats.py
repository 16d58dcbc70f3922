"""Operational totals for monitoring (the Prometheus collector): runs, steps, quarantine, anomalies, budgets, the agent.

Read at scrape time from the run history and the mart, so every figure survives a restart of the process and
agrees with what the Pipeline page shows. Reader role: everything here is granted to `costlake_reader`
(budgets through `v_budgets`, which has no webhook URL). Groups are bounded: statuses, triggers (fixed job
ids), step names, anomaly levels and kinds, budget names, quarantine rules; never run ids.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from backend.mart.analytics import budget_burn
from backend.mart.queries import data_as_of

# Upper bounds (seconds) of the duration histograms: a step of an 11-row import takes ~1 s, a 5M-row
# silver ~10 min on 2 cores, a backfill run up to an hour.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


@dataclass(frozen=True)
class DurationHistogram:
    """Finished runs or steps of one group: cumulative counts per bucket bound, count and total seconds."""

    labels: tuple[str, ...]
    buckets: tuple[tuple[float, int], ...]
    count: int
    total_seconds: float


@dataclass(frozen=True)
class StepTotals:
    step: str
    status: str
    count: int
    rows_in: int
    rows_out: int


@dataclass(frozen=True)
class LatestStep:
    """The newest recorded execution of one step (any run)."""

    step: str
    status: str
    finished_at: dt.datetime | None
    seconds: float | None
    rows_in: int | None
    rows_out: int | None


@dataclass(frozen=True)
class LatestRun:
    status: str
    trigger: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    seconds: float | None


@dataclass(frozen=True)
class BudgetBurn:
    name: str
    period: str
    currency: str
    amount: float
    spent: float

    @property
    def percent(self) -> float:
        return 100.0 * self.spent / self.amount if self.amount else 0.0


def _histograms(
    conn: sa.Connection, source: str, group: Sequence[str], buckets: Sequence[float]
) -> list[DurationHistogram]:
    # One pass per group: a count per bound, so the history is never pulled into Python.
    counts = ", ".join(f"count(*) FILTER (WHERE seconds <= :b{i})" for i in range(len(buckets)))
    cols = ", ".join(group)
    sql = f"SELECT {cols}, {counts}, count(*), coalesce(sum(seconds), 0) FROM ({source}) s GROUP BY {cols} ORDER BY {cols}"
    params = {f"b{i}": float(b) for i, b in enumerate(buckets)}
    out = []
    for row in conn.execute(sa.text(sql), params):
        n = len(group)
        cumulative = tuple(zip(buckets, (int(c) for c in row[n : n + len(buckets)]), strict=True))
        out.append(DurationHistogram(tuple(row[:n]), cumulative, int(row[-2]), float(row[-1])))
    return out


# A trigger names a fixed job ("schedule:pipeline-hourly", "manual", "cli") except runs queued on demand, which
# carry their one-off job id ("schedule:manual-1a2b3c4d"): the id is cut, so the label stays bounded.
_TRIGGER = r"regexp_replace(trigger, '-[0-9a-f]{8,}$', '')"
_RUN_SECONDS = (
    f"SELECT status, {_TRIGGER} AS trigger, extract(epoch FROM finished_at - started_at)::float8 AS seconds "
    "FROM ops.pipeline_runs WHERE finished_at IS NOT NULL"
)
_STEP_SECONDS = (
    "SELECT step, status, extract(epoch FROM finished_at - started_at)::float8 AS seconds "
    "FROM ops.pipeline_steps WHERE finished_at IS NOT NULL AND started_at IS NOT NULL"
)


def run_counts(engine: sa.Engine) -> list[tuple[str, str, int]]:
    """(trigger, status, runs) over the whole history; `running` included."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {_TRIGGER}, status, count(*) FROM ops.pipeline_runs GROUP BY 1, 2 ORDER BY 1, 2")
        )
        return [(t, s, int(n)) for t, s, n in rows]


def run_durations(engine: sa.Engine, buckets: Sequence[float] = DURATION_BUCKETS) -> list[DurationHistogram]:
    """Finished runs' durations per (status, trigger)."""
    with engine.connect() as conn:
        return _histograms(conn, _RUN_SECONDS, ("status", "trigger"), buckets)


def step_durations(engine: sa.Engine, buckets: Sequence[float] = DURATION_BUCKETS) -> list[DurationHistogram]:
    """Finished steps' durations per (step, status)."""
    with engine.connect() as conn:
        return _histograms(conn, _STEP_SECONDS, ("step", "status"), buckets)


def step_totals(engine: sa.Engine) -> list[StepTotals]:
    """Per step and status: executions and the rows they read and wrote."""
    sql = (
        "SELECT step, status, count(*), coalesce(sum(rows_in), 0), coalesce(sum(rows_out), 0) "
        "FROM ops.pipeline_steps GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with engine.connect() as conn:
        return [StepTotals(s, st, int(n), int(i), int(o)) for s, st, n, i, o in conn.execute(sa.text(sql))]


def latest_steps(engine: sa.Engine) -> list[LatestStep]:
    """The newest execution of each step that has started at least once."""
    sql = (
        "SELECT DISTINCT ON (step) step, status, finished_at, "
        "extract(epoch FROM finished_at - started_at)::float8, rows_in, rows_out "
        "FROM ops.pipeline_steps WHERE started_at IS NOT NULL ORDER BY step, started_at DESC"
    )
    with engine.connect() as conn:
        return [LatestStep(*row) for row in conn.execute(sa.text(sql))]


def latest_run(engine: sa.Engine, *, status: str | None = None) -> LatestRun | None:
    sql = (
        f"SELECT status, {_TRIGGER}, started_at, finished_at, extract(epoch FROM finished_at - started_at)::float8 "
        "FROM ops.pipeline_runs WHERE CAST(:s AS text) IS NULL OR status = :s ORDER BY started_at DESC LIMIT 1"
    )
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql), {"s": status}).first()
    return LatestRun(*row) if row else None


def quarantined_rows(engine: sa.Engine) -> dict[str, int]:
    """Rows silver quarantined, per first failing rule, summed over every silver step the history holds."""
    sql = (
        "SELECT r.key, sum(r.value::bigint) FROM ops.pipeline_steps s, "
        "jsonb_each_text(coalesce(s.detail::jsonb -> 'quarantine_rules', '{}'::jsonb)) r "
        "WHERE s.step = 'silver' AND jsonb_typeof(s.detail::jsonb -> 'quarantine_rules') = 'object' "
        "GROUP BY 1 ORDER BY 1"
    )
    with engine.connect() as conn:
        return {rule: int(n) for rule, n in conn.execute(sa.text(sql))}


def open_anomalies(engine: sa.Engine) -> list[tuple[str, str, int]]:
    """(level, kind, open anomalies)."""
    sql = "SELECT level, kind, count(*) FROM mart.anomalies WHERE status = 'open' GROUP BY 1, 2 ORDER BY 1, 2"
    with engine.connect() as conn:
        return [(lv, k, int(n)) for lv, k, n in conn.execute(sa.text(sql))]


def budget_burns(engine: sa.Engine, *, as_of: dt.date | None = None) -> list[BudgetBurn]:
    """Enabled budgets with what their current period spent up to `as_of` (default: the mart's last day),
    computed as the Budgets page computes it."""
    day = as_of or data_as_of(engine)
    with engine.connect() as conn:
        budgets = [
            dict(r)
            for r in conn.execute(
                sa.text(
                    "SELECT budget_id, name, scope_type, scope_value, tag_key, metric, amount, currency, period "
                    "FROM mart.v_budgets WHERE enabled ORDER BY name"
                )
            ).mappings()
        ]
    out = []
    for b in budgets:
        spent = 0.0 if day is None else float(sum(d.cost for d in budget_burn(engine, b, as_of=day)))
        out.append(BudgetBurn(b["name"], b["period"], b["currency"], float(b["amount"]), spent))
    return out


def agent_questions(engine: sa.Engine) -> list[tuple[str, str, int]]:
    """(channel, outcome, questions) from the agent's audit: channel `chat` or `mcp`, outcome `ok` or `failed`."""
    sql = (
        "SELECT CASE WHEN user_name LIKE 'mcp:%' THEN 'mcp' ELSE 'chat' END, "
        "CASE WHEN error IS NULL THEN 'ok' ELSE 'failed' END, count(*) FROM mart.agent_audit GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with engine.connect() as conn:
        return [(c, o, int(n)) for c, o, n in conn.execute(sa.text(sql))]


def mart_loads(engine: sa.Engine) -> tuple[dict[str, int], dt.datetime | None]:
    """Loads per status and when the last successful one finished."""
    with engine.connect() as conn:
        counts = {
            s: int(n) for s, n in conn.execute(sa.text("SELECT status, count(*) FROM mart.load_history GROUP BY 1"))
        }
        last = conn.execute(
            sa.text("SELECT max(finished_at) FROM mart.load_history WHERE status = 'succeeded'")
        ).scalar()
    return counts, last
