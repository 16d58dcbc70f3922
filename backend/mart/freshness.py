"""Data freshness per source: the newest charge day each source delivered, its age, and whether it is stale.

Where data came from is known by `ops.source_cursors` (a row per source, scope, metric and day that bronze
holds, with when it was fetched). The groups, and why:

- `azure:<subscription>` — one per subscription in AZURE_SUBSCRIPTION_IDS (the cursor's scope): a lost
  role assignment or a moved subscription stops one subscription while the others keep arriving, and the
  list is bounded by configuration. Subscriptions no longer configured are not expected any more.
- `file` — every imported file together (upload, inbox, CLI). A file's scopes are its subscriptions,
  possibly hundreds in one export; what stops is the export or the person dropping files, not one scope.
- `demo` — the generated demo estate (source "synthetic", or "azure" served by the demo tenant when no
  Azure credentials are set). It is never stale: nothing is waiting for it.
- `mart` — delivered days that do not reach the mart: a source delivered a newer charge day than the mart
  holds and the last successful load is older than the expectation (runs fail after ingest).

Stale means the newest charge day ended more than the source's expected hours ago (STALE_AFTER_HOURS,
STALE_AFTER_HOURS_FILE; 0 = never stale). The charge day, not the fetch time, is the clock: Azure's open
window is re-fetched every run, so its fetch time moves even when no new day arrives, and a file of old
days dropped today does not make the data fresh. Azure's own delay (a day's cost settles 24-48 h after
the day ends) is part of the default expectation, 72 h. A configured subscription that never delivered
is stale once pipeline runs have been recorded for longer than the expectation (before that the first
pulls may still be under way).

Works on the reader role (it may read ops.source_cursors, ops.pipeline_runs and mart.*).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa

from backend.config import Settings
from backend.mart.demo import DEMO_SOURCES

log = logging.getLogger(__name__)

DEMO = "demo"
FILE = "file"
MART = "mart"
AZURE_PREFIX = "azure:"


@dataclass(frozen=True)
class SourceFreshness:
    """How fresh one source's data is. `age_hours` is the time since its newest charge day ended (UTC)."""

    source: str
    last_charge_day: date | None
    last_loaded_at: datetime | None
    age_hours: float | None
    expected_hours: float
    stale: bool
    detail: str


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def _age_hours(day: date | None, now: datetime) -> float | None:
    if day is None:
        return None
    # Today's partial day (Azure's open window) ends in the future: it is as fresh as data gets.
    return max(0.0, (now - _day_end(day)).total_seconds() / 3600)


def _describe(label: str, day: date | None, age: float | None, expected: float, stale: bool) -> str:
    if day is None:
        return f"{label}: no charge day delivered yet"
    text = f"{label}: newest charge day {day.isoformat()} ({age:.0f} h ago"
    if expected <= 0:
        return text + "; never counted as stale)"
    if stale:
        return text + f", expected within {expected:.0f} h)"
    return text + f"; stale after {expected:.0f} h)"


def _entry(
    source: str, label: str, day: date | None, loaded: datetime | None, expected: float, now: datetime
) -> SourceFreshness:
    age = _age_hours(day, now)
    stale = expected > 0 and age is not None and age > expected
    return SourceFreshness(source, day, loaded, age, expected, stale, _describe(label, day, age, expected, stale))


def source_freshness(engine: sa.Engine, settings: Settings, *, now: datetime | None = None) -> list[SourceFreshness]:
    """One entry per source group (see the module's docstring), Azure subscriptions first, then files, demo, mart."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        # Azure keeps its scope (the subscription); the other sources are one group each.
        cursors = conn.execute(
            sa.text(
                "SELECT source, CASE WHEN source = 'azure' THEN scope ELSE '' END AS scope, "
                "max(day) AS last_day, max(fetched_at) AS last_fetched "
                "FROM ops.source_cursors GROUP BY 1, 2"
            )
        ).all()
        first_run = conn.execute(sa.text("SELECT min(started_at) FROM ops.pipeline_runs")).scalar()
        mart_day = conn.execute(sa.text("SELECT max(charge_date) FROM mart.agg_cost_daily")).scalar()
        mart_loaded = conn.execute(
            sa.text("SELECT max(finished_at) FROM mart.load_history WHERE status = 'succeeded'")
        ).scalar()

    out: list[SourceFreshness] = []
    azure = {scope: (day, fetched) for source, scope, day, fetched in cursors if source == "azure"}
    if settings.azure_configured:
        expected = settings.stale_after_hours
        for sub in settings.azure_subscription_ids:
            day, fetched = azure.get(sub, (None, None))
            entry = _entry(f"{AZURE_PREFIX}{sub}", f"Azure subscription {sub}", day, fetched, expected, now)
            if day is None and expected > 0 and first_run is not None:
                # Runs have had the whole expectation to deliver this subscription's first day.
                waited = (now - first_run).total_seconds() / 3600
                if waited > expected:
                    detail = f"{entry.detail} after {waited:.0f} h of pipeline runs (expected within {expected:.0f} h)"
                    entry = SourceFreshness(entry.source, None, None, None, expected, True, detail)
            out.append(entry)

    files = [(day, fetched) for source, _, day, fetched in cursors if source == FILE]
    if files:
        day, fetched = files[0]
        out.append(_entry(FILE, "Imported files", day, fetched, settings.stale_after_hours_file, now))

    demo = [(day, fetched) for source, _, day, fetched in cursors if source in DEMO_SOURCES]
    if not settings.azure_configured:  # the "azure" source then reads the demo tenant
        demo += list(azure.values())
    if demo:
        day = max(d for d, _ in demo)
        fetched = max(f for _, f in demo)
        age = _age_hours(day, now)
        detail = f"Demo estate: newest charge day {day.isoformat()}; generated data is never stale"
        out.append(SourceFreshness(DEMO, day, fetched, age, 0.0, False, detail))

    real_days = [e.last_charge_day for e in out if e.source != DEMO and e.last_charge_day is not None]
    if real_days:
        out.append(_mart_entry(max(real_days), mart_day, mart_loaded, settings.stale_after_hours, now))
    return out


def _mart_entry(
    delivered: date, mart_day: date | None, loaded: datetime | None, expected: float, now: datetime
) -> SourceFreshness:
    """Whether delivered days reach the mart: behind, and no successful load within the expectation."""
    age = _age_hours(mart_day, now)
    since_load = None if loaded is None else (now - loaded).total_seconds() / 3600
    behind = mart_day is None or mart_day < delivered
    stale = expected > 0 and behind and (since_load is None or since_load > expected)
    shown = mart_day.isoformat() if mart_day else "nothing"
    if stale:
        when = "never" if since_load is None else f"{since_load:.0f} h ago"
        detail = (
            f"Cost mart: holds {shown} while sources delivered {delivered.isoformat()}; "
            f"last successful load {when} (expected within {expected:.0f} h)"
        )
    else:
        detail = f"Cost mart: newest charge day {shown}" + (" (a load is due)" if behind else "")
    return SourceFreshness(MART, mart_day, loaded, age, expected, stale, detail)


def what_to_do(entry: SourceFreshness) -> str:
    """The next step for a stale source, in words a page or a notification can show as is."""
    if entry.source.startswith(AZURE_PREFIX):
        return (
            "Check the latest runs on **Pipeline** (a failed ingest names the cause) and the Azure credential check "
            "on **Sources & settings**; the app registration needs Cost Management Reader on the subscription. "
            "Cost Management itself publishes a day's cost 24-48 h after it ends."
        )
    if entry.source == FILE:
        return (
            "Import a newer export: upload it on **Sources & settings** or drop it into the inbox folder "
            "(check that the scheduled Cost Management export still runs)."
        )
    if entry.source == MART:
        return "Sources deliver, but loading the mart does not succeed: open the failed run's step on **Pipeline**."
    return "See **Pipeline** for the latest runs."
