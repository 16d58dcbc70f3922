"""The run history for an operator: its readers, and the run and step tables shaped from them.

The readers (runs, steps, logs, loads, reconciliation, ingest batches, source cursors) return DataFrames;
the tables turn them into text cells with statuses, counts and a summary of each step.
Runs themselves start through backend.pipeline.launcher (the one manual-run launcher)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa

from app import fmt
from app.data import rows_frame
from backend.auth import Principal, Role, require
from backend.mart import history, reconcile
from backend.mart.audit import record_now

log = logging.getLogger(__name__)

STATUS_ICONS = {"succeeded": "✅", "failed": "❌", "running": "⏳", "pending": "⏸️", "skipped": "⏭️", "abandoned": "💀"}


# --- pipeline runs (backend.mart.history) --------------------------------------------------------


def runs(engine: sa.Engine, *, limit: int = 50) -> pd.DataFrame:
    return rows_frame(history.list_runs(engine, limit=limit), history.RunRecord)


def run_steps(engine: sa.Engine, run_id: str) -> pd.DataFrame:
    return rows_frame(history.run_steps(engine, run_id), history.StepRow)


def run_logs(owner: sa.Engine, run_id: str, *, limit: int = 500) -> pd.DataFrame:
    """Log lines of one run; ops.pipeline_logs is not granted to the reader, so this takes the owner."""
    return rows_frame(history.run_logs(owner, run_id, limit=limit), history.LogLine)


def latest_run(engine: sa.Engine, *, status: str | None = None) -> dict[str, Any] | None:
    run = history.latest_run(engine, status=status)
    return dataclasses.asdict(run) if run else None


def load_history(engine: sa.Engine, *, limit: int = 20) -> pd.DataFrame:
    return rows_frame(history.load_history(engine, limit=limit), history.LoadRecord)


# --- reconciliation (backend.mart.reconcile, header from backend.mart.history) ---------------------


def reconciliation(engine: sa.Engine) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """The latest check and its mismatching rows."""
    check = history.latest_reconciliation(engine)
    if check is None:
        return None, pd.DataFrame()
    rows = reconcile.list_mismatches(engine, check_id=check.check_id)
    return dataclasses.asdict(check), rows_frame(rows, reconcile.ReconciliationRow)


def reconcile_now(owner: sa.Engine, lake, *, actor: Principal) -> reconcile.ReconciliationReport:
    """Compare mart, silver and source totals now, over every month (each load checks its own months).
    It records a check, so it is an admin's (as runs are) and audited."""
    require(actor, Role.admin, "Reconciling the mart")
    report = reconcile.reconcile(owner, lake=lake)
    detail = {"rows": len(report.rows), "mismatches": len(report.mismatches)}
    record_now(owner, actor, "reconcile", str(report.check_id), detail)
    return report


# --- ingest batches and source cursors ---------------------------------------------------------------


def batch_states(owner: sa.Engine, *, limit: int = 50) -> pd.DataFrame:
    """Ingest batches and their handshake state (ops.source_batches is not granted to the reader)."""
    from backend.mart.batches import batch_states as states

    return pd.DataFrame(states(owner, limit=limit))


def source_cursors(owner: sa.Engine) -> pd.DataFrame:
    """What each source delivered (ops.source_cursors is not granted to the reader)."""
    return rows_frame(history.cursor_summary(owner), history.CursorSummary)


# --- the tables an operator reads ----------------------------------------------------------------------

SUMMARY_LIMIT = 160  # characters; the raw JSON stays one expander away


def status_label(status: object) -> str:
    """ "failed" -> "❌ failed"; an unknown status keeps its name without an icon."""
    if fmt.missing(status):
        return "–"
    icon = STATUS_ICONS.get(str(status))
    return f"{icon} {status}" if icon else str(status)


def parse_detail(value: object) -> Any:
    """A step's detail as stored (jsonb arrives as a dict; JSON text from other drivers as str); None when empty."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else None
        except ValueError:
            return value  # not JSON: the text is still worth showing
    if isinstance(value, (Mapping, list)):
        return value
    return None if fmt.missing(value) else value


def _num(detail: Mapping[str, Any], key: str) -> float | None:
    """A numeric value of `detail`, None when absent or not a number (bools are flags, not counts)."""
    value = detail.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _plural(n: float, word: str, plural: str = "", *, compact: bool = False) -> str:
    text = fmt.compact_count(n) if compact else fmt.count(n)
    return f"{text} {word}" if n == 1 else f"{text} {plural or word + 's'}"


def _months(value: Any) -> str | None:
    """["2025-10", …, "2026-10"] -> "months 2025-10…2026-10"; "all" -> "all months"; [] -> "no months"."""
    if value == "all":
        return "all months"
    if not isinstance(value, list):
        return None
    months = sorted(str(m) for m in value if isinstance(m, (str, int)) and not isinstance(m, bool))
    if not months:
        return "no months"
    return f"month {months[0]}" if len(months) == 1 else f"months {months[0]}…{months[-1]}"


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ingest(d: Mapping[str, Any]) -> list[str]:
    batches = [b for b in _items(d.get("batches")) if isinstance(b, Mapping)]
    parts = []
    if "batches" in d:
        sources = sorted({str(b["source"]) for b in batches if b.get("source") is not None})
        parts.append(_plural(len(batches), "batch", "batches") + (f" ({', '.join(sources)})" if sources else ""))
    inbox = [f for f in _items(d.get("inbox")) if isinstance(f, Mapping)]
    if inbox:
        by_status = Counter(str(f.get("status", "?")) for f in inbox)
        states = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        parts.append(f"{_plural(len(inbox), 'inbox file')} ({states})")
    if skipped := _items(d.get("skipped_files")):
        parts.append(f"{_plural(len(skipped), 'file')} already in bronze")
    return parts


def _bronze(d: Mapping[str, Any]) -> list[str]:
    parts = []
    if (rows := _num(d, "bronze_rows")) is not None:
        parts.append(f"{_plural(rows, 'row')} into bronze")
    if (dead := _num(d, "dead_letters")) is not None:
        parts.append(_plural(dead, "dead letter"))
    if "committed_batches" in d:
        parts.append(f"{_plural(len(_items(d['committed_batches'])), 'batch', 'batches')} committed")
    if missing := _items(d.get("batches_not_in_bronze")):
        parts.append(f"{_plural(len(missing), 'batch', 'batches')} not in bronze (fetched again next run)")
    if skipped := _num(d, "skipped_replays"):
        parts.append(f"{fmt.count(skipped)} replays skipped")
    return parts


def _silver(d: Mapping[str, Any]) -> list[str]:
    parts = []
    if (valid := _num(d, "valid_rows")) is not None:
        parts.append(f"{_plural(valid, 'row')} valid")
    if (quarantined := _num(d, "quarantined")) is not None:
        parts.append(f"{fmt.count(quarantined)} quarantined")
    # Superseded and re-rated rows are normal after a source restates a month; worth a word only when there are any.
    if superseded := _num(d, "superseded"):
        parts.append(f"{fmt.count(superseded)} superseded")
    if removed := _num(d, "removed_by_rerating"):
        parts.append(f"{fmt.count(removed)} removed by re-rating")
    if months := _months(d.get("affected_months")):
        parts.append(months)
    return parts


def _gold(d: Mapping[str, Any]) -> list[str]:
    parts = []
    tables = d.get("tables")
    if isinstance(tables, Mapping):
        rows = sum(v for v in tables.values() if isinstance(v, (int, float)) and not isinstance(v, bool))
        parts.append(f"{_plural(len(tables), 'table')}, {_plural(rows, 'row')}")
    months = d.get("affected_months")
    if months == [] and not tables:
        parts.append("nothing to recompute")
    elif text := _months(months):
        parts.append(text)
    return parts


def _mart(d: Mapping[str, Any]) -> list[str]:
    parts = []
    months = d.get("months")
    if months == [] and _num(d, "rows_loaded") is None:
        return ["nothing to load"]
    if (loaded := _num(d, "rows_loaded")) is not None:
        parts.append(f"loaded {_plural(loaded, 'row', compact=True)}")
    if isinstance(months, list):
        parts.append(_plural(len(months), "month"))
    if replaced := _num(d, "rows_replaced"):
        parts.append(f"{fmt.compact_count(replaced)} replaced")
    recon = d.get("reconciliation")
    if isinstance(recon, Mapping) and _num(recon, "mismatches") is not None:
        days = _num(recon, "days")
        checked = f"{_plural(days, 'day')} reconciled, " if days is not None else "reconciled: "
        parts.append(f"{checked}{_plural(_num(recon, 'mismatches') or 0, 'mismatch', 'mismatches')}")
    return parts


def _analytics(d: Mapping[str, Any]) -> list[str]:
    parts = []
    for key, word, plural in (
        ("anomalies", "anomaly", "anomalies"),
        ("series", "series", "series"),
        ("forecast_rows", "forecast row", ""),
    ):
        if (n := _num(d, key)) is not None:
            parts.append(_plural(n, word, plural))
    if suppressed := _num(d, "suppressed"):
        parts.append(f"{fmt.count(suppressed)} suppressed by feedback")
    if isinstance(d.get("as_of"), str):
        parts.append(f"as of {d['as_of']}")
    return parts


def _budgets(d: Mapping[str, Any]) -> list[str]:
    parts = []
    if (n := _num(d, "budgets")) is not None:
        parts.append(_plural(n, "budget"))
    if (n := _num(d, "alerts")) is not None:
        parts.append(_plural(n, "alert"))
    delivered, failed = _num(d, "webhooks_delivered"), _num(d, "webhooks_failed")
    if delivered or failed:
        parts.append(f"webhooks {fmt.count(delivered or 0)} delivered, {fmt.count(failed or 0)} failed")
    return parts


# Known keys per step (backend.pipeline.steps writes them); any other step, or a detail none of these
# understand, gets the generic k=v list so a new step shows something without a change here.
_SUMMARIES: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "ingest": _ingest,
    "bronze": _bronze,
    "silver": _silver,
    "gold": _gold,
    "mart": _mart,
    "analytics": _analytics,
    "budgets": _budgets,
}


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return fmt.count(value)
    # Small fractions (a tolerance of 0.01) keep their digits; larger ones two decimals at most.
    return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _generic(detail: Mapping[str, Any]) -> str:
    """The scalar values as "k=v, …"; nested dicts and lists are left to the raw view (named when they
    are all there is, so the operator knows to look)."""
    scalars = ", ".join(
        f"{k}={_scalar(v)}"
        for k, v in detail.items()
        if not isinstance(v, (Mapping, list, tuple)) and not fmt.missing(v)
    )
    if scalars:
        return scalars
    nested = [str(k) for k, v in detail.items() if isinstance(v, (Mapping, list, tuple)) and v]
    return f"{', '.join(nested)} (see raw step details)" if nested else ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip(" ,") + "…"


def step_summary(step: object, detail: object, *, limit: int = SUMMARY_LIMIT) -> str:
    """One line for an operator from a step's detail JSON, e.g. silver: "4,916,276 rows valid, 0 quarantined,
    months 2025-10…2026-10". Never a raw dict and never raises: anything unexpected falls back to a
    compact "k=v" list of the scalar values, or "" when there is nothing to say."""
    value = parse_detail(detail)
    if value is None or value == {} or value == []:
        return ""
    if isinstance(value, list):
        return f"{_plural(len(value), 'item')}"
    if not isinstance(value, Mapping):
        return _shorten(str(value), limit)
    parts: list[str] = []
    builder = _SUMMARIES.get(str(step))
    if builder is not None:
        try:
            parts = builder(value)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
            # A detail written by an older or newer step version: the generic form still says something.
            log.debug("step %s: detail not in the expected shape; showing it generically", step, exc_info=True)
            parts = []
    return _shorten(", ".join(parts) if parts else _generic(value), limit)


STEP_COLUMNS = ["step", "status", "started", "seconds", "rows in", "rows out", "summary"]
RUN_COLUMNS = ["run_id", "trigger", "status", "started", "finished", "seconds", "rows in", "rows out", "error"]


def steps_table(steps: pd.DataFrame) -> pd.DataFrame:
    """A run's step rows (run_steps) as text cells: icons, UTC times, counts with separators,
    "–" where a value does not apply, and a summary of the detail JSON instead of the JSON itself."""
    rows = [
        {
            "step": s.get("step"),
            "status": status_label(s.get("status")),
            "started": fmt.short_time(s.get("started_at")),
            "seconds": fmt.seconds(s.get("seconds")),
            "rows in": fmt.count(s.get("rows_in")),
            "rows out": fmt.count(s.get("rows_out")),
            "summary": step_summary(s.get("step"), s.get("detail")),
        }
        for s in steps.to_dict("records")
    ]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run list (runs) as text cells in the same order: "–" for a running run's finish and
    counts that do not apply, an empty error for a run without one."""
    rows = [
        {
            "run_id": r.get("run_id"),
            "trigger": r.get("trigger"),
            "status": status_label(r.get("status")),
            "started": fmt.short_time(r.get("started_at")),
            "finished": fmt.short_time(r.get("finished_at")),
            "seconds": fmt.seconds(r.get("seconds")),
            "rows in": fmt.count(r.get("rows_in")),
            "rows out": fmt.count(r.get("rows_out")),
            "error": "" if fmt.missing(r.get("error")) else str(r.get("error")),
        }
        for r in runs.to_dict("records")
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def failed_steps(steps: pd.DataFrame) -> list[tuple[str, str]]:
    """(step, error) of each failed step of a run, for the page to show under the table."""
    return [
        (str(s.get("step")), "" if fmt.missing(s.get("error")) else str(s.get("error")))
        for s in steps.to_dict("records")
        if s.get("status") == "failed"
    ]
