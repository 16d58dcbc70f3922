"""FX rates files: recognised by their header, checked row by row, reduced to one rate per month and pair, replaced by key."""

from __future__ import annotations

import gzip
from datetime import date
from decimal import Decimal

import pytest

from backend.lake import lake_from_settings
from backend.sources import fx
from tests.conftest import make_settings
from tests.sources.test_files import FOCUS_COLUMNS


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, lake_uri=str(tmp_path / "lake"))


def _file(tmp_path, text: str, name: str = "rates.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_header_spellings_and_gzip_are_recognised(tmp_path, settings):
    plain = _file(tmp_path, "Date,Base,Quote,Exchange Rate\n2026-09-30,usd,eur,0.92\n")
    zipped = tmp_path / "rates.csv.gz"
    zipped.write_bytes(gzip.compress(b"\xef\xbb\xbfrate_date,from_currency,target,rate\n2026-09,USD,EUR,0.92\n"))
    assert fx.is_rates_file(plain) and fx.is_rates_file(zipped)
    for path in (plain, zipped):
        (rate,) = fx.parse_rates(path, settings).rates
        assert (rate.key, rate.rate, rate.rate_date) == (("2026-09", "USD", "EUR"), Decimal("0.92"), date(2026, 9, 30))


def test_cost_files_are_not_rates_files(tmp_path):
    focus = _file(tmp_path, ",".join(FOCUS_COLUMNS) + "\n", "focus.csv")
    assert not fx.is_rates_file(focus)
    assert not fx.is_rates_file(tmp_path)


def test_the_latest_date_of_a_month_wins(tmp_path, settings):
    path = _file(
        tmp_path,
        "date,from,to,rate\n2026-09-30,USD,EUR,0.93\n2026-09-01,USD,EUR,0.90\n2026-09-15,USD,EUR,0.91\n"
        "2026-10-31,USD,EUR,0.95\n2026-09-30,EUR,EUR,1\n",
    )
    parsed = fx.parse_rates(path, settings)
    assert [(r.rate_month, r.rate, r.rate_date) for r in parsed.rates] == [
        ("2026-09", Decimal("0.93"), date(2026, 9, 30)),
        ("2026-10", Decimal("0.95"), date(2026, 10, 31)),
    ]
    assert parsed.rows == 5


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2026/09/30,USD,EUR,0.9", "row 3: date '2026/09/30' is not YYYY-MM-DD or YYYY-MM"),
        ("2026-09-31,USD,EUR,0.9", "row 3: date '2026-09-31'"),
        ("2026-09-30,,EUR,0.9", "row 3: the from currency is empty"),
        ("2026-09-30,USD,EUO,0.9", "row 3: to currency 'EUO' is not an ISO 4217 currency code"),
        ("2026-09-30,USD,EUR,-1", "row 3: rate '-1' is not a positive number"),
        ("2026-09-30,USD,EUR,0", "row 3: rate '0' is not a positive number"),
        ("2026-09-30,USD,EUR,abc", "row 3: rate 'abc' is not a positive number"),
        ("2026-09-30,USD,EUR,NaN", "row 3: rate 'NaN' is not a positive number"),
        ("2026-09-30,USD,USD,2", "row 3: USD to USD must be 1"),
        ("2026-08-31,USD,EUR,0.8", "row 3: USD to EUR on 2026-08-31 is 0.8, but row 2 says 0.9"),
    ],
)
def test_a_bad_row_refuses_the_file_naming_it(tmp_path, settings, row, message):
    path = _file(tmp_path, f"date,from,to,rate\n2026-08-31,USD,EUR,0.9\n{row}\n")
    with pytest.raises(fx.RatesRefusedError, match="nothing imported") as refused:
        fx.parse_rates(path, settings)
    assert message in str(refused.value)


def test_a_header_without_rates_is_refused(tmp_path, settings):
    with pytest.raises(fx.RatesRefusedError, match="no rates"):
        fx.parse_rates(_file(tmp_path, "date,from,to,rate\n\n"), settings)


def test_reimport_replaces_its_keys_and_keeps_the_others(tmp_path, settings):
    lake = lake_from_settings(settings)
    first = _file(tmp_path, "date,from,to,rate\n2026-09-30,USD,EUR,0.9\n2026-10-31,USD,EUR,0.95\n", "a.csv")
    done = fx.import_rates(lake, settings, first, run_id="r1")
    assert (done.added, done.replaced, done.changed_months) == (2, 0, ["2026-09", "2026-10"])

    again = fx.import_rates(lake, settings, first, run_id="r2")
    assert (again.unchanged, again.changed_months) == (2, [])

    second = _file(tmp_path, "date,from,to,rate\n2026-10-30,USD,EUR,0.97\n2026-10-31,GBP,EUR,1.15\n", "b.csv")
    done = fx.import_rates(lake, settings, second, run_id="r3")
    assert (done.added, done.replaced, done.changed_months) == (1, 1, ["2026-10"])
    stored = {r.key: (r.rate, r.rate_date) for r in fx.stored_rates(lake)}
    assert stored == {
        ("2026-09", "USD", "EUR"): (Decimal("0.9"), date(2026, 9, 30)),
        ("2026-10", "USD", "EUR"): (Decimal("0.97"), date(2026, 10, 30)),  # the file's own latest date
        ("2026-10", "GBP", "EUR"): (Decimal("1.15"), date(2026, 10, 31)),
    }
    # Only the month the second file changed was rewritten.
    assert lake.changed_partitions("silver/fx_rates", "rate_month", since=lake.version("silver/fx_rates") - 1) == {
        "2026-10"
    }


def test_reporting_currency_is_the_setting_else_the_one_target():
    assert fx.resolve_reporting_currency("eur", ["USD"]) == "EUR"
    assert fx.resolve_reporting_currency("", ["EUR", "EUR"]) == "EUR"
    assert fx.resolve_reporting_currency("", ["EUR", "GBP"]) is None
    assert fx.resolve_reporting_currency("", []) is None
