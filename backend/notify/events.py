"""What is sent: failed or abandoned runs, stale sources, one anomaly digest per run (or day), budget thresholds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa

from backend.mart import locks, notifications
from backend.notify.channels import ANOMALIES, BUDGET_ALERT, RUN_FAILED, STALE_DATA, Channel
from backend.notify.dispatch import enqueue
from backend.notify.render import Item, Message

if TYPE_CHECKING:
    from backend.config import Settings

log = logging.getLogger(__name__)

# A run stopped because the app was shutting down is not a failure anyone needs to act on.
_NOT_NEWS = ("RunCancelledError",)
_TOP_CONTRIBUTORS = 3


def _base(settings: Settings) -> str:
    return settings.app_base_url.rstrip("/")


def run_link(settings: Settings, run_id: str) -> str:
    return f"{_base(settings)}/pipeline?run={quote(run_id)}"


def first_line(text: str | None, limit: int = 300) -> str:
    line = next((part.strip() for part in (text or "").splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _money(value: Any, currency: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{float(value):,.2f} {currency}".strip()


def _signed(value: Any, currency: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{float(value):+,.2f} {currency}".strip()


# --- (a) a run that failed or was abandoned ------------------------------------------------------------------
def run_message(settings: Settings, run: dict[str, Any]) -> Message | None:
    """The message for a failed or abandoned run, None for any other outcome (or a run cancelled by a shutdown)."""
    status = run["status"]
    if status not in ("failed", "abandoned"):
        return None
    error = run.get("step_error") or run.get("error") or ""
    if status == "failed" and any(marker in error for marker in _NOT_NEWS):
        return None
    step = run.get("step")
    if status == "failed":
        title = f"Pipeline run failed at step {step}" if step else "Pipeline run failed"
    else:
        title = f"Pipeline run abandoned during step {step}" if step else "Pipeline run abandoned"
    lines = [first_line(error) or "no error was recorded"]
    if status == "abandoned":
        lines.append("Its process ended without finishing the run (killed or crashed); the next run picks up.")
    facts = [("Run", run["run_id"]), ("Trigger", run.get("trigger") or "")]
    if run.get("started_at"):
        facts.append(("Started", run["started_at"].astimezone(UTC).isoformat(timespec="seconds")))
    if run.get("host"):
        facts.append(("Host", run["host"]))
    return Message(
        kind=RUN_FAILED,
        title=title,
        severity="error",
        lines=lines,
        facts=facts,
        link=run_link(settings, run["run_id"]),
        link_label="Open the run on the Pipeline page",
        data={
            "run_id": run["run_id"],
            "status": status,
            "step": step,
            "error": first_line(error),
            "trigger": run.get("trigger"),
        },
    )


def queue_run(engine: sa.Engine, settings: Settings, run_id: str) -> int | None:
    with engine.begin() as conn:
        run = notifications.run_outcome(conn, run_id)
        message = run_message(settings, run) if run else None
        if message is None:
            return None
        return enqueue(
            conn, settings, kind=RUN_FAILED, dedup_key=f"run:{run_id}:{run['status']}", message=message, run_id=run_id
        )


# --- (b) data stale beyond its source's expectation --------------------------------------------------------------
def stale_message(settings: Settings, entry: Any) -> Message:
    day = entry.last_charge_day.isoformat() if entry.last_charge_day else None
    age = f"{entry.age_hours:.0f} h" if entry.age_hours is not None else "ever"
    title = f"Cost data is stale: {entry.source}"
    lines = [entry.detail]
    facts = [
        ("Source", entry.source),
        ("Newest charge day", day or "none yet"),
        ("Age", age),
        ("Expected within", f"{entry.expected_hours:.0f} h"),
    ]
    return Message(
        kind=STALE_DATA,
        title=title,
        severity="warning",
        lines=lines,
        facts=facts,
        link=f"{_base(settings)}/pipeline",
        link_label="Open the Pipeline page",
        data={
            "source": entry.source,
            "last_charge_day": day,
            "age_hours": entry.age_hours,
            "expected_hours": entry.expected_hours,
        },
    )


def queue_stale(engine: sa.Engine, settings: Settings, *, run_id: str | None, now: datetime | None = None) -> list[int]:
    """One message per stale source and newest charge day: told once per episode, again only after new data
    arrived and went stale once more."""
    from backend.mart.freshness import source_freshness

    queued = []
    for entry in source_freshness(engine, settings, now=now):
        if not entry.stale:
            continue
        day = entry.last_charge_day.isoformat() if entry.last_charge_day else "none"
        with engine.begin() as conn:
            event_id = enqueue(
                conn,
                settings,
                kind=STALE_DATA,
                dedup_key=f"stale:{entry.source}:{day}",
                message=stale_message(settings, entry),
                run_id=run_id,
            )
        if event_id is not None:
            queued.append(event_id)
    return queued


# --- (c) new anomalies, one digest ----------------------------------------------------------------------------
def _contributors(raw: Any) -> list[dict[str, Any]]:
    items = [c for c in (raw or []) if isinstance(c, dict)]
    return sorted(items, key=lambda c: abs(float(c.get("delta") or 0)), reverse=True)[:_TOP_CONTRIBUTORS]


def _member(level: str, value: str) -> str:
    label = level.replace("_", " ").replace("tag:", "tag ")
    return f"{label} {value or '(none)'}"


def anomaly_item(settings: Settings, a: dict[str, Any]) -> Item:
    cur = a["currency"]
    title = (
        f"{_member(a['level'], a['dimension_value'])} on {a['charge_date'].isoformat()}: {_signed(a['impact'], cur)}"
    )
    lines = [
        f"{a['kind'].replace('_', ' ')} in {a['metric']} cost: {_money(a['actual'], cur)} "
        f"against {_money(a['expected'], cur)} expected"
    ]
    top = _contributors(a.get("contributors"))
    if top:
        shown = ", ".join(
            f"{c.get('dimension', '')} {c.get('value') or '(none)'} ({_signed(c.get('delta'), cur)})" for c in top
        )
        lines.append(f"Top contributors: {shown}")
    return Item(
        title=title,
        lines=lines,
        link=f"{_base(settings)}/anomalies?anomaly={a['anomaly_id']}",
        link_label="Review or mark as expected",
    )


def _collapse(anomalies: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One entry per member, day and currency: the actual-cost anomaly stands for its amortized twin (both are
    marked notified). Keeps the impact order."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for a in anomalies:
        key = (a["level"], a["dimension_value"], a["charge_date"], a["currency"])
        if key not in chosen or (a["metric"] == "actual" and chosen[key]["metric"] != "actual"):
            chosen[key] = a
    kept = {id(a) for a in chosen.values()}
    return [a for a in anomalies if id(a) in kept], anomalies


def digest_message(settings: Settings, entries: list[dict[str, Any]], *, total: int) -> Message:
    shown = entries[: settings.notify_anomaly_max_items]
    title = f"{total} new cost anomal{'y' if total == 1 else 'ies'}"
    lines = ["Largest cost impact first."]
    if total > len(shown):
        lines.append(f"The {len(shown)} largest are listed; {total - len(shown)} more are on the Anomalies page.")
    return Message(
        kind=ANOMALIES,
        title=title,
        severity="warning",
        lines=lines,
        items=[anomaly_item(settings, a) for a in shown],
        link=f"{_base(settings)}/anomalies",
        link_label="Open the Anomalies page",
        data={
            "count": total,
            "anomalies": [
                {
                    "anomaly_id": a["anomaly_id"],
                    "level": a["level"],
                    "member": a["dimension_value"],
                    "metric": a["metric"],
                    "charge_date": a["charge_date"].isoformat(),
                    "actual": float(a["actual"]),
                    "expected": None if a["expected"] is None else float(a["expected"]),
                    "impact": None if a["impact"] is None else float(a["impact"]),
                    "currency": a["currency"],
                    "kind": a["kind"],
                    "contributors": _contributors(a.get("contributors")),
                }
                for a in shown
            ],
        },
    )


def queue_anomaly_digest(
    engine: sa.Engine, settings: Settings, *, run_id: str, now: datetime | None = None
) -> int | None:
    """One digest of the open anomalies no digest carried yet; they are marked in the same transaction."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        # One digest at a time, even from two processes (the pipeline lock covers runs, not the CLI's tools).
        locks.in_transaction(conn, locks.ANOMALY_DIGEST)
        newest = notifications.newest_anomaly_day(conn)
        if newest is None:
            return None
        if settings.notify_anomaly_digest == "daily" and notifications.digest_sent_on(conn, now.date()):
            return None
        found = notifications.unnotified_anomalies(
            conn, since=newest - timedelta(days=settings.notify_anomaly_days - 1)
        )
        if not found:
            return None
        entries, every = _collapse(found)
        key = (
            f"anomalies:{now.date().isoformat()}"
            if settings.notify_anomaly_digest == "daily"
            else f"anomalies:{run_id}"
        )
        event_id = enqueue(
            conn,
            settings,
            kind=ANOMALIES,
            dedup_key=key,
            message=digest_message(settings, entries, total=len(entries)),
            run_id=run_id,
            now=now,
        )
        if event_id is not None:
            notifications.mark_anomalies_notified(conn, every, event_id)
        return event_id


# --- (d) budget thresholds ---------------------------------------------------------------------------------
def budget_message(settings: Settings, alert: dict[str, Any]) -> Message:
    """`alert`: the budget's payload as budgets.evaluate_budgets builds it (kept whole for old receivers)."""
    cur = alert["currency"]
    kind = "forecast to reach" if alert["threshold_type"] == "forecast" else "reached"
    pct = f"{float(alert['threshold_pct']):g}%"
    title = f"Budget {alert['budget']} {kind} {pct}"
    scope = "all cost" if alert["scope_type"] == "total" else f"{alert['scope_type']} {alert['scope_value']}"
    value = "forecast spend" if alert["threshold_type"] == "forecast" else "spent"
    lines = [
        f"{_money(alert['amount'], cur)} {value} of {_money(alert['budget_amount'], cur)} "
        f"({alert['period']} from {alert['period_start']}, data as of {alert['as_of']})."
    ]
    facts = [("Scope", scope), ("Threshold", f"{pct} ({alert['threshold_type']})")]
    if alert.get("filters"):
        facts.append(("Filters", "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(alert["filters"].items()))))
    if "exceed_date" in alert:  # budgets.evaluate_budgets' outlook (older payloads lack it)
        facts.append(("Exceeds on", alert["exceed_date"] or "not expected this period"))
    if alert.get("backtest_error") is not None:
        facts.append(
            ("Forecast error", f"MAPE {float(alert['backtest_error']):.1%} (backtest {alert['backtest_window']})")
        )
    return Message(
        kind=BUDGET_ALERT,
        title=title,
        severity="error" if float(alert["threshold_pct"]) >= 100 else "warning",
        lines=lines,
        facts=facts,
        link=f"{_base(settings)}/budgets",
        link_label="Open the Budgets page",
        data=dict(alert),
        legacy=dict(alert),
    )


def queue_budget_alert(
    conn: sa.Connection, settings: Settings, alert: dict[str, Any], *, own: Channel | None, run_id: str
) -> int | None:
    """The alert for every channel taking budget alerts, plus the budget's own webhook."""
    return enqueue(
        conn,
        settings,
        kind=BUDGET_ALERT,
        dedup_key=f"budget_alert:{alert['alert_id']}",
        message=budget_message(settings, alert),
        run_id=run_id,
        extra=[own] if own else [],
    )
