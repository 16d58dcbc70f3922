"""Reconciliation per day, source and currency: mart total vs silver total vs the total the source reported.

Actual cost (FOCUS BilledCost) is compared at every level. Silver's daily totals can be passed in as an
Arrow table (so this does not depend on silver's layout), or read from silver/costs through the Lake.
Results are stored per check in mart.reconciliation_results; `list_mismatches` is what the UI shows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from backend.lake.delta import Lake
from backend.medallion.schemas import SILVER_COSTS

log = logging.getLogger(__name__)

# Source metrics whose reported_total is an actual-cost total (ops.source_cursors.metric).
ACTUAL_METRICS = ("ActualCost", "FocusCost", "file")

# Columns of the silver daily totals table `reconcile` accepts.
SILVER_TOTALS_SCHEMA = pa.schema(
    [
        ("charge_date", pa.date32()),
        ("source", pa.string()),
        ("currency", pa.string()),
        ("total", pa.decimal128(38, 12)),
    ]
)


@dataclass(frozen=True)
class ReconciliationRow:
    """One day x source x currency. Totals are None where that level has no data."""

    charge_date: dt.date
    source: str
    currency: str
    mart_total: Decimal | None
    silver_total: Decimal | None
    reported_total: Decimal | None
    status: str  # ok / mismatch / missing_in_mart / missing_in_silver
    detail: str


@dataclass(frozen=True)
class ReconciliationReport:
    check_id: int
    checked_at: dt.datetime
    rows: list[ReconciliationRow]

    @property
    def mismatches(self) -> list[ReconciliationRow]:
        return [r for r in self.rows if r.status != "ok"]


def silver_daily_totals(lake: Lake, *, months: Sequence[str] | None = None) -> pa.Table:
    """Sum of BilledCost per charge day, x_Source and BillingCurrency in silver/costs (SILVER_TOTALS_SCHEMA)."""
    columns = ["x_ChargeDate", "x_Source", "BillingCurrency", "BilledCost"]
    filters = [("x_ChargeMonth", "in", list(months))] if months else None
    table = lake.read_arrow(SILVER_COSTS, columns=columns, filters=filters)
    grouped = table.group_by(columns[:3]).aggregate([("BilledCost", "sum")])
    return pa.table(
        {
            "charge_date": grouped["x_ChargeDate"],
            "source": pc.fill_null(grouped["x_Source"], ""),
            "currency": pc.fill_null(grouped["BillingCurrency"], ""),
            "total": grouped["BilledCost_sum"].cast(pa.decimal128(38, 12)),
        },
        schema=SILVER_TOTALS_SCHEMA,
    )


def _date_filter(column: str, months: Sequence[str] | None) -> tuple[str, dict]:
    if not months:
        return "TRUE", {}
    bounds = []
    params = {}
    for i, month in enumerate(sorted(months)):
        start = dt.date.fromisoformat(f"{month}-01")
        end = (start + dt.timedelta(days=32)).replace(day=1)
        bounds.append(f"({column} >= :s{i} AND {column} < :e{i})")
        params |= {f"s{i}": start, f"e{i}": end}
    return "(" + " OR ".join(bounds) + ")", params


def _compare(
    mart: Decimal | None, silver: Decimal | None, reported: Decimal | None, tolerance: Decimal
) -> tuple[str, str]:
    if silver is None and mart is not None:
        return "missing_in_silver", "the mart has cost that silver does not"
    if mart is None and silver is not None:
        return "missing_in_mart", "silver has cost the mart does not (load pending or failed?)"
    problems = []
    if mart is not None and silver is not None and abs(mart - silver) > tolerance:
        problems.append(f"mart - silver = {mart - silver:.6f}")
    if reported is not None and silver is not None and abs(reported - silver) > tolerance:
        problems.append(f"silver - reported = {silver - reported:.6f}")
    return ("mismatch", "; ".join(problems)) if problems else ("ok", "")


def reconcile(
    engine: sa.Engine,
    *,
    silver_totals: pa.Table | None = None,
    lake: Lake | None = None,
    months: Sequence[str] | None = None,
    run_id: str | None = None,
    tolerance: Decimal = Decimal("0.01"),
) -> ReconciliationReport:
    """Compare the three levels for every (day, source, currency) any of them has, store the check, return it.

    `engine` is the owner role (the check is written). Pass `silver_totals` (SILVER_TOTALS_SCHEMA) or a
    `lake` to read them from silver/costs.
    """
    if silver_totals is None:
        if lake is None:
            raise ValueError("pass silver_totals or a lake to read silver from")
        silver_totals = silver_daily_totals(lake, months=months)
    silver_totals = silver_totals.select(SILVER_TOTALS_SCHEMA.names).cast(SILVER_TOTALS_SCHEMA)

    mart_where, mart_params = _date_filter("a.charge_date", months)
    cursor_where, cursor_params = _date_filter("c.day", months)
    silver: dict[tuple, Decimal] = {}
    for row in silver_totals.to_pylist():
        if months and row["charge_date"].strftime("%Y-%m") not in months:
            continue
        key = (row["charge_date"], row["source"], row["currency"])
        silver[key] = silver.get(key, Decimal(0)) + row["total"]

    with engine.begin() as conn:
        mart = {
            (d, s, c): t
            for d, s, c, t in conn.execute(
                sa.text(
                    f"""SELECT a.charge_date, src.source, cur.currency_code, sum(a.actual_cost)
                        FROM mart.agg_cost_daily a
                        JOIN mart.dim_source src USING (source_key)
                        JOIN mart.dim_currency cur USING (currency_key)
                        WHERE {mart_where} GROUP BY 1, 2, 3"""
                ),
                mart_params,
            )
        }
        reported = {
            (d, s, c): t
            for d, s, c, t in conn.execute(
                sa.text(
                    f"""SELECT c.day, c.source, coalesce(c.currency, ''), sum(c.reported_total)
                        FROM ops.source_cursors c
                        WHERE c.reported_total IS NOT NULL AND c.metric IN :metrics AND {cursor_where}
                        GROUP BY 1, 2, 3"""
                ).bindparams(sa.bindparam("metrics", expanding=True)),
                {"metrics": list(ACTUAL_METRICS), **cursor_params},
            )
        }
        rows = []
        for key in sorted(set(mart) | set(silver) | set(reported)):
            m, s, r = mart.get(key), silver.get(key), reported.get(key)
            status, detail = _compare(m, s, r, tolerance)
            rows.append(ReconciliationRow(*key, m, s, r, status, detail))
        mismatches = sum(1 for r in rows if r.status != "ok")
        check_id, checked_at = conn.execute(
            sa.text(
                "INSERT INTO mart.reconciliation_checks (run_id, tolerance, days_checked, mismatches) "
                "VALUES (:run_id, :tolerance, :days, :mismatches) RETURNING check_id, checked_at"
            ),
            {
                "run_id": run_id,
                "tolerance": tolerance,
                "days": len({r.charge_date for r in rows}),
                "mismatches": mismatches,
            },
        ).one()
        if rows:
            conn.execute(
                sa.text(
                    "INSERT INTO mart.reconciliation_results (check_id, charge_date, source, currency, mart_total, "
                    "silver_total, reported_total, status, detail) VALUES (:check_id, :charge_date, :source, "
                    ":currency, :mart_total, :silver_total, :reported_total, :status, :detail)"
                ),
                [{"check_id": check_id, **r.__dict__} for r in rows],
            )
    if mismatches:
        log.warning("reconciliation %s: %d of %d day/source rows do not match", check_id, mismatches, len(rows))
    else:
        log.info("reconciliation %s: %d day/source rows match", check_id, len(rows))
    return ReconciliationReport(check_id, checked_at, rows)


def list_mismatches(engine: sa.Engine, *, check_id: int | None = None) -> list[ReconciliationRow]:
    """Rows of the latest check (or `check_id`) that are not ok, newest day first. Works on the reader role."""
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(
                """SELECT charge_date, source, currency, mart_total, silver_total, reported_total, status, detail
                   FROM mart.reconciliation_results
                   WHERE check_id = coalesce(:check_id, (SELECT max(check_id) FROM mart.reconciliation_checks))
                     AND status <> 'ok'
                   ORDER BY charge_date DESC, source, currency"""
            ),
            {"check_id": check_id},
        )
        return [ReconciliationRow(*row) for row in result]
