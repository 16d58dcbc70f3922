"""Mart I/O for analytics: upsert anomalies with the days they scored, append forecasts, read feedback (owner engine)."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import sqlalchemy as sa

log = logging.getLogger(__name__)

METHOD = "seasonal_median"


def read_feedback(engine: sa.Engine) -> pd.DataFrame:
    """'expected' verdicts with the day, impact and currency of the anomaly they were given on. The currency is
    the verdict's own (kept when the anomaly row is gone); null for verdicts from before analytics was per
    currency, which cover every currency of the member."""
    sql = """
        SELECT f.feedback_id, f.level, f.dimension_value, f.kind, f.verdict, f.suppress_until,
               coalesce(a.charge_date, f.created_at::date) AS marked_date, a.impact AS marked_impact,
               f.currency AS marked_currency
        FROM mart.anomaly_feedback f LEFT JOIN mart.anomalies a ON a.anomaly_id = f.anomaly_id
        WHERE f.verdict = 'expected'"""
    with engine.connect() as conn:
        return pd.read_sql_query(sa.text(sql), conn)


def read_scored_days(engine: sa.Engine) -> dict[tuple[str, date], tuple[str, str]]:
    """{(currency, charge_date): (data_fingerprint, config_fingerprint)} of every day a run has scored."""
    sql = "SELECT currency, charge_date, data_fingerprint, config_fingerprint FROM mart.anomaly_scored_days"
    with engine.connect() as conn:
        return {
            (r.currency, r.charge_date): (r.data_fingerprint, r.config_fingerprint) for r in conn.execute(sa.text(sql))
        }


def forget_scored_days(engine: sa.Engine) -> int:
    """Forget which days were scored, so the next run scores the whole history again (for a reset that empties
    mart.anomalies: otherwise its days would count as scored)."""
    with engine.begin() as conn:
        return conn.execute(sa.text("DELETE FROM mart.anomaly_scored_days")).rowcount


def write_anomalies(
    engine: sa.Engine,
    anomalies: pd.DataFrame,
    *,
    scored: dict[tuple[str, date], str],
    config_fingerprint: str,
    run_id: str,
    levels: list[str],
    metrics: list[str],
    gone: list[tuple[str, date]] = (),
) -> dict:
    """Upsert the anomalies of the (currency, day)s this run scored (`scored`: their data fingerprints), drop
    the open ones on those days the rescoring no longer finds (re-rated data) and every open one on `gone` days
    (no longer in gold), and record the scored days; rows a user already judged keep their status and feedback.

    All in one transaction, so a day counts as scored exactly when its anomalies are in. Each anomaly belongs
    to one currency's series and uq_anomalies holds the currency, so one member's anomalies on the same day in
    two currencies are two rows."""
    rows = [
        {
            "run_id": run_id,
            "level": r.level,
            "value": r.member,
            "metric": r.metric,
            "day": r.charge_date,
            "expected": float(r.expected),
            "lower": float(r.lower_bound),
            "upper": float(r.upper_bound),
            "actual": float(r.actual),
            "impact": float(r.impact),
            "currency": r.currency,
            "severity": float(min(r.severity, 1e6)),
            "kind": r.kind,
            "method": METHOD,
            "contributors": r.contributors,
            "status": r.status,
            "feedback": r.feedback,
        }
        for r in anomalies.itertuples()
    ]
    upsert = sa.text(
        """
        INSERT INTO mart.anomalies (run_id, level, dimension_value, metric, charge_date, expected, lower_bound,
            upper_bound, actual, impact, currency, severity, kind, method, contributors, status, feedback)
        VALUES (:run_id, :level, :value, :metric, :day, :expected, :lower, :upper, :actual, :impact, :currency,
            :severity, :kind, :method, CAST(:contributors AS jsonb), :status, :feedback)
        ON CONFLICT ON CONSTRAINT uq_anomalies DO UPDATE SET
            run_id = EXCLUDED.run_id, expected = EXCLUDED.expected, lower_bound = EXCLUDED.lower_bound,
            upper_bound = EXCLUDED.upper_bound, actual = EXCLUDED.actual, impact = EXCLUDED.impact,
            currency = EXCLUDED.currency, severity = EXCLUDED.severity, kind = EXCLUDED.kind,
            method = EXCLUDED.method, contributors = EXCLUDED.contributors, updated_at = now(),
            status = CASE WHEN mart.anomalies.status = 'open' THEN EXCLUDED.status ELSE mart.anomalies.status END,
            feedback = coalesce(mart.anomalies.feedback, EXCLUDED.feedback)"""
    )
    days = sorted(scored)
    stale_days = days + sorted(gone)
    with engine.begin() as conn:
        # The days travel as two arrays (one statement, however long the history a first run scores).
        stale = conn.execute(
            sa.text(
                "DELETE FROM mart.anomalies a USING unnest(CAST(:currencies AS text[]), CAST(:days AS date[]))"
                " AS s(currency, charge_date) WHERE a.currency = s.currency AND a.charge_date = s.charge_date"
                " AND a.status = 'open' AND a.level = ANY(:levels) AND a.metric = ANY(:metrics)"
                " AND a.run_id IS DISTINCT FROM :run_id"
            ),
            {
                "currencies": [c for c, _ in stale_days],
                "days": [d for _, d in stale_days],
                "levels": list(levels),
                "metrics": list(metrics),
                "run_id": run_id,
            },
        ).rowcount
        if rows:
            conn.execute(upsert, rows)
        if gone:
            conn.execute(
                sa.text(
                    "DELETE FROM mart.anomaly_scored_days d USING unnest(CAST(:currencies AS text[]),"
                    " CAST(:days AS date[])) AS s(currency, charge_date)"
                    " WHERE d.currency = s.currency AND d.charge_date = s.charge_date"
                ),
                {"currencies": [c for c, _ in gone], "days": [d for _, d in gone]},
            )
        if days:
            conn.execute(
                sa.text(
                    """
                    INSERT INTO mart.anomaly_scored_days (currency, charge_date, data_fingerprint,
                        config_fingerprint, run_id)
                    SELECT s.currency, s.charge_date, s.fingerprint, :config, :run_id
                    FROM unnest(CAST(:currencies AS text[]), CAST(:days AS date[]), CAST(:fingerprints AS text[]))
                        AS s(currency, charge_date, fingerprint)
                    ON CONFLICT (currency, charge_date) DO UPDATE SET data_fingerprint = EXCLUDED.data_fingerprint,
                        config_fingerprint = EXCLUDED.config_fingerprint, run_id = EXCLUDED.run_id,
                        scored_at = now()"""
                ),
                {
                    "currencies": [c for c, _ in days],
                    "days": [d for _, d in days],
                    "fingerprints": [scored[k] for k in days],
                    "config": config_fingerprint,
                    "run_id": run_id,
                },
            )
    # Deleting first then upserting the same run's rows keeps re-runs idempotent: the rescored days end up
    # holding exactly this run's findings plus whatever users already judged.
    span = f"{days[0][1]}..{days[-1][1]}" if days else "none"
    log.info(
        "anomalies: %d upserted, %d stale open rows removed, %d (currency, day)s scored (%s), %d gone from gold",
        len(rows),
        stale,
        len(days),
        span,
        len(gone),
    )
    return {"anomalies": len(rows), "anomalies_removed": stale}


def write_forecasts(
    engine: sa.Engine,
    forecasts: pd.DataFrame,
    *,
    run_id: str,
    interval_level: float,
    as_of: date,
    keep_days: int = 90,
    horizon_days: int = 30,
) -> dict:
    """Append this run's forecasts as one generation (one generated_at for every currency: the primary keys hold
    the currency, so readers pick a scope's latest generation in one currency) and prune generations older than
    keep_days."""
    days = forecasts[forecasts["row_type"] == "day"]
    totals = forecasts[forecasts["row_type"] != "day"]
    currencies = sorted(set(forecasts["currency"]))
    with engine.begin() as conn:
        generated_at = conn.execute(sa.text("SELECT now()")).scalar_one()
        common = {
            "interval_level": interval_level,
            "generated_at": generated_at,
            "run_id": run_id,
            # forecast.backtest_error: MAPE of the horizon's total (the Budgets page reads the horizon back).
            "metric_name": f"mape_{horizon_days}d_total",
        }
        if len(days):
            conn.execute(
                sa.text(
                    """
                    INSERT INTO mart.forecasts (scope_type, scope_value, metric, forecast_date, point, lower_bound,
                        upper_bound, interval_level, currency, method, backtest_metric, backtest_error, generated_at,
                        run_id)
                    VALUES (:level, :member, :metric, :forecast_date, :point, :lower, :upper, :interval_level,
                        :currency, :method, :metric_name, :error, :generated_at, :run_id)"""
                ),
                [_params(r, common) for r in days.itertuples()],
            )
        if len(totals):
            conn.execute(
                sa.text(
                    """
                    INSERT INTO mart.forecast_totals (scope_type, scope_value, metric, period, period_start,
                        period_end, actual_to_date, point, lower_bound, upper_bound, interval_level, currency, method,
                        backtest_metric, backtest_error, as_of, generated_at, run_id)
                    VALUES (:level, :member, :metric, :period, :forecast_date, :period_end, :actual_to_date, :point,
                        :lower, :upper, :interval_level, :currency, :method, :metric_name, :error, :as_of,
                        :generated_at, :run_id)"""
                ),
                [
                    {
                        **_params(r, common),
                        "period": r.row_type,
                        "period_end": r.period_end,
                        "actual_to_date": float(r.actual_to_date),
                        "as_of": as_of,
                    }
                    for r in totals.itertuples()
                ],
            )
        pruned = 0
        for table in ("mart.forecasts", "mart.forecast_totals"):
            pruned += conn.execute(
                sa.text(f"DELETE FROM {table} WHERE generated_at < :g - make_interval(days => :d)"),
                {"g": generated_at, "d": keep_days},
            ).rowcount
    log.info(
        "forecasts: %d daily rows, %d totals in %d currencies, %d old rows pruned",
        len(days),
        len(totals),
        len(currencies),
        pruned,
    )
    return {"forecast_rows": len(days), "forecast_totals": len(totals)}


def _params(r, common: dict) -> dict:
    error = r.backtest_error
    return {
        **common,
        "currency": r.currency,
        "level": r.level,
        "member": r.member,
        "metric": r.metric,
        "forecast_date": r.forecast_date,
        "point": float(r.point),
        "lower": float(r.lower_bound),
        "upper": float(r.upper_bound),
        "method": r.method,
        "error": None if error is None or pd.isna(error) else float(error),
    }
