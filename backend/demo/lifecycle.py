"""The demo estate kept apart from real data: never loaded once a real source delivers, removed when one does.

The demo estate (source "synthetic") fills an empty install so every page shows something. Real totals
must never include it, so the moment a real source is about to deliver (an imported or uploaded file,
an inbox file, Azure with real credentials) the demo's rows are removed from every layer first, and
the demo is not loaded again. "Remove demo data" on Sources & settings does the same on demand.

Removal runs inside a pipeline run (the pipeline lock): nothing else writes the lake or the mart then.
When only demo data was ever loaded (the usual case) the cost tables are dropped whole; when real data
sits beside it (an install from before this rule), only the demo's bronze and silver rows are deleted
and gold and the mart are rebuilt from silver by the next steps.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from backend.config import Settings
from backend.lake.catalog import SILVER_FX_RATES
from backend.lake.delta import Lake
from backend.lake.engine import remove_tree
from backend.mart import demo as mart_demo
from backend.sources import manifest

log = logging.getLogger(__name__)

_KEEP_TABLES = (SILVER_FX_RATES.name,)  # reference data the user imported


def real_delivered(conn: sa.Connection, settings: Settings) -> bool:
    """Whether a real source has delivered: files always; Azure only with real credentials (else it is the
    demo tenant, FakeAzure serving the demo estate)."""
    return mart_demo.delivered(conn, ["file"] + (["azure"] if settings.azure_configured else []))


def inbox_waiting(settings: Settings) -> bool:
    """Whether the inbox holds a file or export run folder that a scan would try to import."""
    inbox = settings.inbox_dir
    if not inbox.is_dir():
        return False
    for path in inbox.iterdir():
        if path.name.startswith(".") or path.name in ("processed", "rejected"):
            continue
        if path.is_file() and path.suffix.lower() not in (".part", ".tmp", ".crdownload"):
            return True
        if path.is_dir() and any(path.rglob(manifest.MANIFEST)):
            return True
    return False


def remove_demo_data(engine: sa.Engine, lake: Lake, settings: Settings) -> dict[str, object]:
    """Remove the demo estate from the lake, the mart and the cursors; returns what was done (for the run)."""
    with engine.connect() as conn:
        keep_real = real_delivered(conn, settings)
    # Bronze keeps its table: its Delta log holds the Kafka high-water marks (app transactions) that stop
    # the consumer from reading the demo's messages again. Silver and quarantine lose only the demo's rows
    # when real ones sit beside them, else they go whole; gold is rebuilt from silver in any case.
    removed = _delete_demo_rows(lake, ("bronze",) if not keep_real else ("bronze", "silver"))
    for layer in ("silver", "gold") if not keep_real else ("gold",):
        for table in lake.list_tables(layer):
            if table not in _KEEP_TABLES:
                remove_tree(lake, lake.uri(table))
                removed[table] = "dropped"
    mart_demo.empty_demo_data(engine)
    log.warning(
        "demo data removed (%s): lake %s, mart tables emptied", "real data kept" if keep_real else "all", removed
    )
    return {"demo_removed": True, "real_data_kept": keep_real, "lake": removed}


def seed_demo_budgets(engine: sa.Engine) -> list[str]:
    """Three budgets on the demo's biggest subscriptions this month, so the Overview's burn panel and the
    alerts show something: one already over, one close (its forecast crosses it), one fine. Only while the
    demo is what the mart shows and no budget exists yet (the user's budgets are never touched)."""
    from backend.analytics.budgets import create_budget
    from backend.auth import system_principal

    found = mart_demo.budget_candidates(engine)
    if found is None:
        return []
    as_of, top = found
    start = as_of.replace(day=1)
    next_month = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    elapsed, days = (as_of - start).days + 1, (next_month - start).days
    made = []
    # over: below what is spent already; close: just under the month's run rate; fine: twice the run rate.
    for (sub_id, label, currency, spent), (kind, factor) in zip(
        top, (("over", None), ("close", 0.97), ("fine", 2.0)), strict=False
    ):
        run_rate = float(spent) / elapsed * days
        amount = float(spent) * 0.9 if factor is None else run_rate * factor
        name = f"{mart_demo.DEMO_BUDGET_PREFIX}{label} monthly ({kind})"
        create_budget(
            engine,
            # The pipeline's own demo seeding, not a user: audited as system:pipeline.
            actor=system_principal("pipeline"),
            name=name,
            scope_type="subscription",
            scope_value=sub_id,
            metric="actual",
            amount=round(max(amount, 1.0), 2),
            currency=currency,
            period="monthly",
            actual_thresholds=[50, 80, 100],
            forecast_thresholds=[100],
            enabled=True,
        )
        made.append(name)
    log.info("demo budgets seeded: %s", made)
    return made


def _delete_demo_rows(lake: Lake, layers: tuple[str, ...]) -> dict[str, object]:
    from backend.lake.catalog import BRONZE_COST_RECORDS, SILVER_COSTS, SILVER_QUARANTINE

    done: dict[str, object] = {}
    names = ", ".join(f"'{s}'" for s in mart_demo.DEMO_SOURCES)
    tables = {BRONZE_COST_RECORDS.name: "source", SILVER_COSTS.name: "x_Source", SILVER_QUARANTINE.name: "source"}
    for table, column in tables.items():
        if table.split("/", 1)[0] in layers and lake.exists(table):
            metrics = lake.table(table).delete(f"{column} IN ({names})")
            done[table] = metrics.get("num_deleted_rows", 0) if isinstance(metrics, dict) else "deleted"
    return done


def is_real_source(name: str, settings: Settings) -> bool:
    """A CostSource name that delivers real data (not the demo estate, not the demo tenant)."""
    return name == "file" or (name == "azure" and settings.azure_configured)
