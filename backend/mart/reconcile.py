"""Reconciliation per day, source and currency: mart total vs silver total vs the total the source reported.

Actual cost (FOCUS BilledCost) is compared at every level. Silver's daily totals can be passed in as an
Arrow table (so this does not depend on silver's layout), or read from silver/costs through the Lake.
Results are stored per check in mart.reconciliation_results; `list_mismatches` is what the UI shows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from backend.lake.catalog import FAMILY_RANK, SILVER_COSTS
from backend.lake.delta import Lake

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


# Silver columns the reconciliation reads.
_SILVER_COLUMNS = ["SubAccountId", "x_ChargeDate", "x_SourceFamily", "x_Source", "BillingCurrency", "BilledCost"]
# Stands in for a null subscription while ranking families (Arrow joins never match null keys; gold's
# preference treats rows scoped to a billing account only as one group, eqNullSafe).
_NO_SUBSCRIPTION = "\x00"


@dataclass(frozen=True)
class SilverLevel:
    """What reconciliation needs from silver: daily totals as the mart counts them, and who sent which family."""

    totals: pa.Table  # SILVER_TOTALS_SCHEMA; `source` is the granularity family, as in the mart's dim_source
    families: dict[tuple[dt.date, str], str]  # (day, x_Source) -> the one family that source's rows have that day


def _preferred_totals(table: pa.Table) -> pa.Table:
    """BilledCost per day, family and currency over the rows gold keeps (the best family per subscription-day)."""
    per = table.group_by(["SubAccountId", "x_ChargeDate", "x_SourceFamily", "BillingCurrency"]).aggregate(
        [("BilledCost", "sum")]
    )
    ranks = pa.array([0, *FAMILY_RANK.values()], pa.int8())
    rank = pc.take(ranks, pc.add(pc.fill_null(pc.index_in(per["x_SourceFamily"], pa.array(list(FAMILY_RANK))), -1), 1))
    per = per.set_column(0, "SubAccountId", pc.fill_null(per["SubAccountId"], _NO_SUBSCRIPTION)).append_column(
        "_rank", rank
    )
    best = (
        per.group_by(["SubAccountId", "x_ChargeDate"])
        .aggregate([("_rank", "max")])
        .rename_columns(["SubAccountId", "x_ChargeDate", "_rank"])
    )
    kept = per.join(best, ["SubAccountId", "x_ChargeDate", "_rank"], join_type="inner")
    grouped = kept.group_by(["x_ChargeDate", "x_SourceFamily", "BillingCurrency"]).aggregate(
        [("BilledCost_sum", "sum")]
    )
    return pa.table(
        {
            "charge_date": grouped["x_ChargeDate"],
            "source": pc.fill_null(grouped["x_SourceFamily"], ""),
            "currency": pc.fill_null(grouped["BillingCurrency"], ""),
            "total": grouped["BilledCost_sum_sum"].cast(pa.decimal128(38, 12)),
        },
        schema=SILVER_TOTALS_SCHEMA,
    )


def _families(table: pa.Table) -> dict[tuple[dt.date, str], str]:
    seen: dict[tuple[dt.date, str], set[str]] = {}
    pairs = table.group_by(["x_ChargeDate", "x_Source", "x_SourceFamily"]).aggregate([])
    for row in pairs.to_pylist():
        seen.setdefault((row["x_ChargeDate"], row["x_Source"]), set()).add(row["x_SourceFamily"])
    return {key: next(iter(fams)) for key, fams in seen.items() if len(fams) == 1 and None not in fams}


def silver_level(lake: Lake, *, months: Sequence[str] | None = None) -> SilverLevel:
    """Silver's side of the check, read one month at a time (a 5M-row silver never sits in memory whole).

    Without `months`, every month silver holds.
    """
    if not months:
        months = {p["x_ChargeMonth"] for p in lake.table(SILVER_COSTS.name).partitions()} - {None}
    totals, families = [], {}
    for month in sorted(months):
        table = lake.read_arrow(SILVER_COSTS.name, columns=_SILVER_COLUMNS, filters=[("x_ChargeMonth", "=", month)])
        totals.append(_preferred_totals(table))
        families.update(_families(table))
    return SilverLevel(pa.concat_tables(totals) if totals else SILVER_TOTALS_SCHEMA.empty_table(), families)


def silver_daily_totals(lake: Lake, *, months: Sequence[str] | None = None) -> pa.Table:
    """BilledCost per charge day, granularity family and currency in silver/costs, counted as gold counts it.

    The mart's source dimension is silver's x_SourceFamily, and gold keeps only the most detailed family
    of a (subscription, day): comparing anything else would flag every day of a healthy load.
    """
    return silver_level(lake, months=months).totals


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
    if silver is None and reported:
        return "missing_in_silver", f"the source reported {reported:.6f} that silver does not have"
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
    source_families: Mapping[tuple[dt.date, str], str] | None = None,
    months: Sequence[str] | None = None,
    run_id: str | None = None,
    tolerance: Decimal = Decimal("0.01"),
) -> ReconciliationReport:
    """Compare the three levels for every (day, source, currency) any of them has, store the check, return it.

    `engine` is the owner role (the check is written). Pass `silver_totals` (SILVER_TOTALS_SCHEMA, keyed by
    family) or a `lake` to read them from silver/costs. A source reports per source name: its total is
    compared on the family its silver rows have that day (`source_families`, read from silver with the
    lake), or under its own name when that is unknown.
    """
    if silver_totals is None:
        if lake is None:
            raise ValueError("pass silver_totals or a lake to read silver from")
        level = silver_level(lake, months=months)
        silver_totals, source_families = level.totals, level.families
    families = source_families or {}
    silver_totals = silver_totals.select(SILVER_TOTALS_SCHEMA.names).cast(SILVER_TOTALS_SCHEMA)

    mart_where, mart_params = _date_filter("a.charge_date", months)
    cursor_where, cursor_params = _date_filter("c.day", months)
    silver: dict[tuple, Decimal] = {}
    for row in silver_totals.to_pylist():
        if months and row["charge_date"].strftime("%Y-%m") not in months:
            continue
        if row["total"] is None:
            continue  # a day only an amortized report covers: no actual cost to compare
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
            if t is not None
        }
        reported: dict[tuple, Decimal] = {}
        for d, s, c, t in conn.execute(
            sa.text(
                f"""SELECT c.day, c.source, coalesce(c.currency, ''), sum(c.reported_total)
                        FROM ops.source_cursors c
                        WHERE c.reported_total IS NOT NULL AND c.metric IN :metrics AND {cursor_where}
                        GROUP BY 1, 2, 3"""
            ).bindparams(sa.bindparam("metrics", expanding=True)),
            {"metrics": list(ACTUAL_METRICS), **cursor_params},
        ):
            key = (d, families.get((d, s), s), c)
            reported[key] = reported.get(key, Decimal(0)) + t
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
