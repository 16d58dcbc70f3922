"""A two-currency estate and FX rates files through the whole pipeline: converted to the cent, replaced, missing rates said.

USD and EUR FOCUS files and rates files are imported with the command line's path (PipelineService,
source "files") and through the inbox, into real Kafka, Delta (Sail) and Postgres.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from backend.mart import queries
from backend.pipeline.service import PipelineService
from backend.resources import open_resources
from backend.runtime import Runtime
from tests.conftest import make_settings
from tests.pipeline.test_real_files import STEPS, _focus_rows, _import, _write
from tests.sources.test_files import FOCUS_COLUMNS

pytestmark = pytest.mark.slow
SEP, OCT = (dt.date(2026, 9, 1), dt.date(2026, 9, 30)), (dt.date(2026, 10, 1), dt.date(2026, 10, 31))
CENT = Decimal("0.01")


@pytest.fixture
def service(tmp_path, pg_url, kafka_bootstrap):
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_costs=f"fx.{uuid.uuid4().hex[:8]}",
        kafka_consumer_group=f"fx-{uuid.uuid4().hex[:8]}",
        lake_uri=str(tmp_path / "lake"),
        demo_mode=False,
    )
    service = PipelineService(open_resources(Runtime(settings)))
    yield service
    service.close()


def _in_october(rows):
    """The same rows a month later (another month of the estate)."""
    out = []
    for row in rows:
        moved = dict(row)
        for column in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
            day = dt.date.fromisoformat(row[column][:10])
            moved[column] = f"{day.replace(month=day.month + 1).isoformat()}T00:00:00Z"
        out.append(moved)
    return out


def _sum(rows, column="BilledCost", rate=Decimal(1)) -> Decimal:
    return sum((Decimal(r[column]) * rate for r in rows), Decimal(0)).quantize(CENT)


def _rates(path, lines: list[str], header: str = "date,from,to,rate"):
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def _converted(service, period, metric="actual"):
    frame = queries.cost_breakdown(
        service.engine, start=period[0], end=period[1], grain="monthly", metric=metric, converted_to="EUR"
    )
    assert list(frame["currency"]) == ["EUR"]  # one series, whatever the billing currencies
    value = frame["cost_exact"].iloc[0]
    return None if value is None else value.quantize(CENT)


@pytest.fixture
def estate(service, tmp_path):
    """USD in September and October, EUR in September; a rates file for September only."""
    usd = _focus_rows(60, seed=11, currency="USD")
    usd_oct = _in_october(_focus_rows(40, seed=12, currency="USD"))
    eur = _focus_rows(50, seed=13, currency="EUR")
    for name, rows in (("usd-09.csv", usd), ("usd-10.csv", usd_oct), ("eur-09.csv", eur)):
        _write(tmp_path / name, FOCUS_COLUMNS, rows)
    rates = _rates(tmp_path / "rates.csv", ["2026-09-15,USD,EUR,0.91", "2026-09-30,USD,EUR,0.9234"])
    summary = _import(service, tmp_path / "usd-09.csv", tmp_path / "usd-10.csv", tmp_path / "eur-09.csv", rates)
    return {"usd": usd, "usd_oct": usd_oct, "eur": eur, "summary": summary}


def test_a_two_currency_estate_converts_to_the_cent_and_a_month_without_a_rate_stays_null(service, estate):
    usd, eur = estate["usd"], estate["eur"]
    (report,) = estate["summary"].steps["ingest"].detail["fx_rates"]
    assert report["rates_kept"] == 1 and report["changed_months"] == ["2026-09"]
    rate = Decimal("0.9234")  # the month's latest date wins
    assert _converted(service, SEP) == _sum(eur) + _sum(usd, rate=rate)
    assert _converted(service, SEP, "amortized") == _sum(eur, "EffectiveCost") + _sum(usd, "EffectiveCost", rate)
    # October's USD has no EUR rate: not converted (null, never 0) and said so.
    assert _converted(service, OCT) is None
    status = queries.fx_status(service.engine, start=SEP[0], end=OCT[1])
    assert status.reporting_currency == "EUR" and status.latest_rate_date == dt.date(2026, 9, 30)
    assert status.missing == [("USD", "2026-10")]

    # Without conversion nothing sums across currencies: one series per currency, each its own total.
    plain = queries.cost_breakdown(service.engine, start=SEP[0], end=SEP[1], grain="monthly")
    assert {r.currency: r.cost_exact.quantize(CENT) for r in plain.itertuples()} == {"EUR": _sum(eur), "USD": _sum(usd)}
    assert queries.fx_status(service.engine, start=SEP[0], end=SEP[1]).missing == []

    with service.engine.connect() as conn:
        readable = conn.execute(
            sa.text(
                "SELECT has_table_privilege('costlake_reader', 'mart.fx_rates', 'SELECT') AND "
                "has_table_privilege('costlake_reader', 'mart.fx_reporting_currency', 'SELECT')"
            )
        ).scalar()
        per_day = conn.execute(
            sa.text(
                "SELECT count(*) FROM mart.agg_cost_daily WHERE actual_cost IS NOT NULL AND actual_cost_converted = 0"
            )
        ).scalar()
    assert readable and per_day == 0


def test_a_rates_reimport_replaces_its_months_and_they_are_converted_again(service, estate, tmp_path):
    usd, usd_oct, eur = estate["usd"], estate["usd_oct"], estate["eur"]
    newer = _rates(
        tmp_path / "rates-2.csv",
        ["2026-09-30,USD,EUR,0.95", "2026-10-31,USD,EUR,0.97"],
        header="Date,Base,Target,Exchange_Rate",
    )
    summary = _import(service, newer)
    assert summary.steps["gold"].detail["fx_months"] == ["2026-09", "2026-10"]
    assert _converted(service, SEP) == _sum(eur) + _sum(usd, rate=Decimal("0.95"))
    assert _converted(service, OCT) == _sum(usd_oct, rate=Decimal("0.97"))
    status = queries.fx_status(service.engine, start=SEP[0], end=OCT[1])
    assert status.missing == [] and status.latest_rate_date == dt.date(2026, 10, 31)

    # The same file again changes nothing: no month is converted again.
    again = _import(service, newer)
    assert again.steps["gold"].detail["fx_months"] == []
    assert _converted(service, SEP) == _sum(eur) + _sum(usd, rate=Decimal("0.95"))


def test_a_bad_rates_file_is_refused_naming_the_row_and_loads_nothing(service, estate, tmp_path):
    before = _converted(service, SEP)
    bad = _rates(tmp_path / "bad-rates.csv", ["2026-09-30,USD,EUR,0.99", "2026-10-31,USD,EUR,-0.5"])
    summary = service.run(steps=STEPS, sources=["files"], trigger="test", options={"files": [str(bad)]})
    assert summary.status == "failed"
    assert "bad-rates.csv" in summary.error and "row 3: rate '-0.5' is not a positive number" in summary.error
    assert _converted(service, SEP) == before  # the good row of the refused file was not loaded either


def test_rates_files_in_the_inbox_are_imported_or_rejected(service, estate, tmp_path):
    inbox = service.settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    _rates(inbox / "october.csv", ["2026-10-31,USD,EUR,0.97"])
    _rates(inbox / "typo.csv", ["2026-10-31,USD,EUO,0.97"])
    summary = service.run(steps=STEPS, sources=["inbox"], trigger="test")
    assert summary.status == "succeeded", summary.error
    results = {r["file"]: r["status"] for r in summary.steps["ingest"].detail["inbox"]}
    assert results == {"october.csv": "imported", "typo.csv": "refused"}
    assert (inbox / "processed" / "october.csv").exists()
    error = (inbox / "rejected" / "typo.csv.error.txt").read_text()
    assert "row 2: to currency 'EUO' is not an ISO 4217 currency code" in error
    assert _converted(service, OCT) == _sum(estate["usd_oct"], rate=Decimal("0.97"))


def test_the_overview_offers_every_currency_converted_and_its_kpis_are_the_converted_sums(service, estate, monkeypatch):
    """Two billing currencies and a reporting currency: the Overview's KPIs, trend and movers can show the
    whole estate in EUR; a period with a currency lacking a rate is "not available", never a partial sum."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import app.context
    from app import data
    from backend.config import REPO_ROOT

    usd, eur = estate["usd"], estate["eur"]
    rate = Decimal("0.9234")
    status = data.data_status(service.engine)
    assert status.currencies == ["EUR", "USD"] or set(status.currencies) == {"EUR", "USD"}
    assert status.reporting_currency == "EUR"
    choice = data.converted_choice("EUR")
    # As of the last September day: September in EUR is both currencies converted (October has no rate yet).
    k = data.kpis(service.engine, as_of=SEP[1], currency=choice)
    assert k.month_to_date.quantize(CENT) == _sum(eur) + _sum(usd, rate=rate) and k.currencies == ["EUR"]
    assert data.kpis(service.engine, as_of=dt.date(2026, 10, 20), currency=choice).month_to_date is None
    # One currency alone is still its own total.
    assert data.kpis(service.engine, as_of=SEP[1], currency="USD").month_to_date.quantize(CENT) == _sum(usd)
    trend = data.daily_total(service.engine, start=SEP[0], end=SEP[1], currency=choice)
    assert Decimal(str(round(trend["cost"].sum(), 2))) == _sum(eur) + _sum(usd, rate=rate)
    last_usd_day = max(dt.date.fromisoformat(r["ChargePeriodStart"][:10]) for r in usd)
    movers = data.top_movers(service.engine, as_of=last_usd_day, currency=choice, dimension="service")
    assert not movers.empty and movers["current_cost"].notna().all()
    assert data.month_end_forecast(service.engine, as_of=SEP[1], currency=choice) is None

    st.cache_data.clear()
    st.cache_resource.clear()
    from app.process import Server
    from backend.pipeline.launcher import RunLauncher

    server = Server(service.resources, service, RunLauncher(service), schedules=None)
    monkeypatch.setattr(app.context, "get_server", lambda: server)
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "overview.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    (select,) = [s for s in at.selectbox if s.label == "Currency"]
    assert choice in select.options
    select.set_value(choice).run()
    assert not at.exception, at.exception
    shown = " ".join(str(c.value) for c in at.caption)
    assert "Forecasts are per billing currency" in shown
    st.cache_data.clear()
    st.cache_resource.clear()
