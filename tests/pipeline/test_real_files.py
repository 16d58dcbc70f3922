"""Real cost files through the whole pipeline: one-metric exports and their pairing, part files, re-deliveries.

Every case imports files with the command line's path (PipelineService, source "files") into real
Kafka, Delta (Sail), and Postgres, then checks the mart's totals to the cent per currency.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from backend.mart import queries
from backend.pipeline.service import PipelineService
from tests.pipeline.services import pipeline_service
from tests.sources.test_files import EA_COLUMNS, FOCUS_COLUMNS

pytestmark = pytest.mark.slow
SUBS = ("1caaa5a3-2b66-438e-8ab4-bce37d518c5d", "ed570627-0265-4620-bb42-bae06bcfa914")
START = date(2026, 9, 1)


@pytest.fixture
def service(tmp_path, pg_url, kafka_bootstrap):
    service = pipeline_service(tmp_path, pg_url, kafka_bootstrap, demo_mode=False)
    yield service
    service.close()


# Up to the mart: analytics and budgets read it and are tested on their own.
STEPS = ["ingest", "bronze", "silver", "gold", "mart"]


def _import(service: PipelineService, *paths):
    summary = service.run(steps=STEPS, sources=["files"], trigger="test", options={"files": [str(p) for p in paths]})
    assert summary.status == "succeeded", summary.error
    return summary


def _mart_totals(service: PipelineService) -> dict[str, tuple[Decimal | None, Decimal | None]]:
    """(actual, amortized) per currency, each None when any day lacks that metric."""
    with service.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.currency_code, CASE WHEN count(*) = count(a.actual_cost) THEN sum(a.actual_cost) END,"
                " CASE WHEN count(*) = count(a.amortized_cost) THEN sum(a.amortized_cost) END"
                " FROM mart.agg_cost_daily a JOIN mart.dim_currency c USING (currency_key) GROUP BY 1"
            )
        ).all()
    return {cur: (_cents(actual), _cents(amortized)) for cur, actual, amortized in rows}


def _mismatches(service: PipelineService) -> int:
    """Of the latest reconciliation (mart vs silver vs what the files reported)."""
    with service.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT mismatches FROM mart.reconciliation_checks ORDER BY check_id DESC LIMIT 1")
        ).scalar_one()


def _cents(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Decimal("0.01"))


def _write(path, columns, rows) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode())


def _focus_rows(n: int, seed: int = 7, currency: str = "USD") -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        day = START + timedelta(days=i % 10)
        sub = SUBS[i % 2]
        resource = (
            f"/subscriptions/{sub}/resourcegroups/rg-{i % 3}/providers/microsoft.compute/virtualmachines/vm-{i % 17}"
        )
        cost = Decimal(rng.randint(1, 10**8)) / Decimal(10**6)
        rows.append(
            {
                "BilledCost": str(cost),
                "EffectiveCost": str(cost * Decimal("0.9")),
                "ListCost": str(cost * 2),
                "ContractedCost": str(cost),
                "BillingAccountId": "8611537",
                "BillingAccountName": "Contoso",
                "BillingCurrency": currency,
                "BillingPeriodStart": f"{START.isoformat()}T00:00:00Z",
                "BillingPeriodEnd": "2026-10-01T00:00:00Z",
                "ChargeCategory": "Usage",
                "ChargeClass": "NULL",
                "ChargeDescription": "D4s v5",
                "ChargePeriodStart": f"{day.isoformat()}T00:00:00Z",
                "ChargePeriodEnd": f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z",
                "InvoiceIssuerName": "Microsoft",
                "ProviderName": "Microsoft",
                "PublisherName": "Microsoft",
                "PricingQuantity": "24",
                "PricingUnit": "1 Hour",
                "ServiceCategory": "Compute",
                "ServiceName": "Virtual Machines",
                "SubAccountId": f"/subscriptions/{sub}",
                "SubAccountName": f"sub-{i % 2}",
                "ResourceId": resource,
                # Rows i and i + 170 share every dimension (a repeated natural key), cost differs.
                "Tags": '{"env":"prod"}' if i % 4 == 0 else "NULL",
                "x_ResourceGroupName": f"rg-{i % 3}",
            }
        )
    return rows


def _total(rows, column="BilledCost") -> Decimal:
    return sum((Decimal(r[column]) for r in rows), Decimal(0)).quantize(Decimal("0.01"))


def test_part_files_imported_one_by_one_give_the_whole_file_and_a_redelivery_changes_nothing(service, tmp_path):
    rows = _focus_rows(340)
    whole = (_total(rows), _total(rows, "EffectiveCost"))
    part1, part2 = tmp_path / "part_0_0001.csv", tmp_path / "part_1_0001.csv"
    # Interleaved: both parts cover every day and subscription, and the repeated keys are split between them.
    _write(part1, FOCUS_COLUMNS, rows[0::2])
    _write(part2, FOCUS_COLUMNS, rows[1::2])
    _import(service, part1)
    _import(service, part2)
    assert _mart_totals(service) == {"USD": whole}
    assert _mismatches(service) == 0  # the files' reported totals add up too

    # The whole file delivered again (Azure re-delivers month-to-date): the same mart.
    full = tmp_path / "focus-2026-09.csv"
    _write(full, FOCUS_COLUMNS, rows)
    _import(service, full)
    assert _mart_totals(service) == {"USD": whole} and _mismatches(service) == 0

    # A restatement: one row re-rated. The delivery replaces its days, the mart follows it exactly.
    restated = [dict(r) for r in rows]
    restated[5]["BilledCost"] = str(Decimal(restated[5]["BilledCost"]) + Decimal("1000.005"))
    again = tmp_path / "focus-2026-09-restated.csv"
    _write(again, FOCUS_COLUMNS, restated)
    _import(service, again)
    assert _mart_totals(service) == {"USD": (_total(restated), whole[1])} and _mismatches(service) == 0


def _mart_rows(service: PipelineService) -> dict[str, list]:
    with service.engine.connect() as conn:
        return {
            table: sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM mart.{table}")).all()), key=repr)
            for table in ("agg_cost_daily", "agg_cost_monthly", "agg_cost_resource_monthly", "agg_cost_by_tag")
        } | {
            "fact": sorted(
                map(
                    tuple,
                    conn.execute(sa.text("SELECT charge_date, resource_key, actual_cost FROM mart.fact_cost_daily")),
                ),
                key=repr,
            )
        }


def test_a_new_day_is_loaded_into_the_mart_in_place_and_equals_a_full_reload(service, tmp_path):
    rows = _focus_rows(200)
    _write(tmp_path / "focus-2026-09.csv", FOCUS_COLUMNS, rows)
    first = _import(service, tmp_path / "focus-2026-09.csv")
    assert first.steps["mart"].detail["days"] == {}  # the first load of a month copies it whole
    # The next day's file: silver touches one day, gold rewrites it, the mart replaces just that day.
    day = [dict(r, ChargePeriodStart="2026-09-11T00:00:00Z", ChargePeriodEnd="2026-09-12T00:00:00Z") for r in rows[:30]]
    _write(tmp_path / "focus-2026-09-11.csv", FOCUS_COLUMNS, day)
    summary = _import(service, tmp_path / "focus-2026-09-11.csv")
    mart = summary.steps["mart"]
    assert mart.detail["days"] == {"2026-09": ["2026-09-11"]}
    assert mart.rows_out == len(day)
    assert _mart_totals(service) == {"USD": (_total(rows + day), _total(rows + day, "EffectiveCost"))}
    assert _mismatches(service) == 0
    in_place = _mart_rows(service)
    # The mart step on its own reloads every month whole: nothing changes.
    reload = service.run(steps=["mart"], sources=["files"], trigger="test")
    assert reload.status == "succeeded" and reload.steps["mart"].detail["days"] == {}
    assert _mart_rows(service) == in_place


def test_a_scope_billed_in_two_currencies_reconciles_per_currency(service, tmp_path):
    # One billing account billing the same subscriptions' days in EUR and USD (an MCA account with two
    # billing profiles): each currency's reported total is its own, never EUR + USD under the first one seen.
    usd, eur = _focus_rows(60, seed=11), _focus_rows(60, seed=12, currency="EUR")
    both = tmp_path / "focus-two-currencies.csv"
    _write(both, FOCUS_COLUMNS, [r for pair in zip(usd, eur, strict=True) for r in pair])
    _import(service, both)
    assert _mart_totals(service) == {
        "USD": (_total(usd), _total(usd, "EffectiveCost")),
        "EUR": (_total(eur), _total(eur, "EffectiveCost")),
    }
    assert _mismatches(service) == 0
    # Re-delivered with the EUR rows gone (moved to another account): the days' EUR totals go with them.
    again = tmp_path / "focus-usd-only.csv"
    _write(again, FOCUS_COLUMNS, list(reversed(usd)))
    _import(service, again)
    assert _mart_totals(service) == {"USD": (_total(usd), _total(usd, "EffectiveCost"))}
    assert _mismatches(service) == 0
    with service.engine.connect() as conn:
        cursors = conn.execute(sa.text("SELECT DISTINCT currency FROM ops.source_cursors WHERE source = 'file'"))
        assert {c for (c,) in cursors} == {"USD"}


def test_three_parts_then_the_whole_file_is_one_delivery_not_four(service, tmp_path):
    rows = _focus_rows(300, seed=5)
    parts = [tmp_path / f"part_{n}_0001.csv" for n in range(3)]
    for n, part in enumerate(parts):
        _write(part, FOCUS_COLUMNS, rows[n::3])
        _import(service, part)
    whole = {"USD": (_total(rows), _total(rows, "EffectiveCost"))}
    assert _mart_totals(service) == whole
    full = tmp_path / "whole.csv"
    _write(full, FOCUS_COLUMNS, list(reversed(rows)))  # other bytes, the same rows
    summary = _import(service, full)
    assert "re-delivers" in summary.steps["ingest"].detail["files"][0]["delivery"]
    assert _mart_totals(service) == whole and _mismatches(service) == 0


def test_two_parts_in_one_import_and_an_unrelated_file_for_the_same_days_add_up(service, tmp_path):
    rows = _focus_rows(120, seed=3)
    a, b = tmp_path / "export_part1.csv", tmp_path / "export_part2.csv"
    _write(a, FOCUS_COLUMNS, rows[:60])
    _write(b, FOCUS_COLUMNS, rows[60:])
    _import(service, a, b)
    assert _mart_totals(service) == {"USD": (_total(rows), _total(rows, "EffectiveCost"))}


def _ea_row(i: int, cost: Decimal, *, charge_type: str = "Usage", pricing: str = "OnDemand") -> dict[str, str]:
    day = START + timedelta(days=i % 5)
    return {
        "AccountName": "Platform",
        "AccountOwnerId": "ops@contoso.com",
        "SubscriptionId": SUBS[i % 2],
        "SubscriptionName": f"sub-{i % 2}",
        "ResourceGroup": "rg-web",
        "ResourceLocation": "westeurope",
        "Date": f"{day.month:02d}/{day.day:02d}/{day.year}",
        "MeterCategory": "Virtual Machines",
        "MeterSubCategory": "Dsv5 Series",
        "MeterName": "D4s v5",
        "MeterId": f"meter-{i % 4}",
        "Quantity": "24",
        "EffectivePrice": "0.192",
        "CostInBillingCurrency": str(cost),
        "UnitPrice": "0.192",
        "ResourceId": f"/subscriptions/{SUBS[i % 2]}/resourceGroups/rg-web/providers/x/vm-{i}",
        "Tags": '"env": "prod"' if i % 2 == 0 else "",
        "ChargeType": charge_type,
        "PricingModel": pricing,
        "BillingAccountId": "8611537",
        "BillingCurrencyCode": "EUR",
    }


def test_an_actual_cost_export_alone_loads_and_amortized_cost_is_not_available_until_its_export(service, tmp_path):
    actual_rows = [_ea_row(i, Decimal(i + 1) / 8) for i in range(20)]
    actual_rows.append(_ea_row(0, Decimal("300"), charge_type="Purchase", pricing="Reservation"))
    actual = tmp_path / "ActualCost_2026-09.csv"
    _write(actual, EA_COLUMNS, actual_rows)
    _import(service, actual)
    actual_total = _total(actual_rows, "CostInBillingCurrency")
    assert _mart_totals(service) == {"EUR": (actual_total, None)}
    kpi = queries.kpis(service.engine, metric="amortized")
    assert kpi.month_to_date is None and not kpi.available
    assert queries.kpis(service.engine, metric="actual").month_to_date.quantize(Decimal("0.01")) == actual_total

    # The matching amortized export: the reservation purchase is spread over usage, the same days.
    amortized_rows = [_ea_row(i, Decimal(i + 1) / 10) for i in range(20)]
    amortized_rows.append(_ea_row(1, Decimal("10"), charge_type="UnusedReservation", pricing="Reservation"))
    amortized = tmp_path / "AmortizedCost_2026-09.csv"
    _write(amortized, EA_COLUMNS, amortized_rows)
    _import(service, amortized)
    assert _mart_totals(service) == {"EUR": (actual_total, _total(amortized_rows, "CostInBillingCurrency"))}
    assert queries.kpis(service.engine, metric="amortized").available


# Columns each FOCUS version adds over 1.0 (1.3 replaces ProviderName by ServiceProviderName / HostProviderName).
_VERSION_COLUMNS = {
    "1.0": ["ProviderName", "PublisherName", "InvoiceIssuerName", "SkuId", "SkuPriceId"],
    "1.1": ["ProviderName", "PublisherName", "InvoiceIssuerName", "CommitmentDiscountQuantity",
            "CommitmentDiscountUnit", "CapacityReservationId", "SkuMeter", "ServiceSubcategory"],
    "1.2": ["ProviderName", "PublisherName", "InvoiceIssuerName", "InvoiceId", "PricingCurrency",
            "PricingCurrencyEffectiveCost", "BillingAccountType", "SubAccountType"],
    "1.3": ["ServiceProviderName", "HostProviderName", "PublisherName", "InvoiceIssuerName", "InvoiceId", "PricingCurrency",
            "AllocatedMethodId", "AllocatedResourceId"],
}  # fmt: skip
_CLOUDS = {
    "AWS": ("Amazon Web Services, Inc.", "123456789012"),
    "Google Cloud": ("Google", "billing-prj-1"),
    "Microsoft": ("Microsoft", f"/subscriptions/{SUBS[0]}"),
    "Oracle": ("Oracle", "ocid1.tenancy.oc1..aaaa"),
}


def _multi_cloud_rows(version: str) -> list[dict[str, str]]:
    rows = _focus_rows(80, seed=11)
    for i, row in enumerate(rows):
        cloud = list(_CLOUDS)[i % 4]
        issuer, account = _CLOUDS[cloud]
        row.update(
            {
                "SubAccountId": account,
                "ResourceId": f"{cloud.lower()}-res-{i % 9}",
                "x_ResourceGroupName": "",
                "ProviderName": cloud,
                "ServiceProviderName": cloud,
                "HostProviderName": cloud,
                "PublisherName": issuer,
                "InvoiceIssuerName": issuer,
                "InvoiceId": f"INV-{i % 3}",
                "PricingCurrency": "USD",
                "PricingCurrencyEffectiveCost": row["EffectiveCost"],
                "BillingAccountType": "Billing Account",
                "SubAccountType": "Subscription",
                "CommitmentDiscountQuantity": "NULL",
                "CapacityReservationId": "",
                "SkuId": f"sku-{i % 5}",
                "SkuPriceId": f"price-{i % 5}",
                "SkuMeter": "Compute Hours",
                "ServiceSubcategory": "Virtual Machines",
                "AllocatedMethodId": "NULL",
                "AllocatedResourceId": "NULL",
                "Tags": '{" Team ":"web"}' if i % 2 else "NULL",
            }
        )
    if version == "1.3":
        for row in rows:
            del row["ProviderName"]
    return rows


@pytest.mark.parametrize(("version", "kind"), [("1.0", "csv"), ("1.1", "csv.gz"), ("1.2", "parquet"), ("1.3", "csv")])
def test_every_focus_version_keeps_its_columns_and_splits_by_cloud(service, tmp_path, version, kind):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _multi_cloud_rows(version)
    base = [c for c in FOCUS_COLUMNS if c not in ("ProviderName", "PublisherName", "InvoiceIssuerName")]
    columns = base + _VERSION_COLUMNS[version]
    path = tmp_path / f"focus-{version}.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({c: [r.get(c, "") for r in rows] for c in columns}), path)
    else:
        _write(path, columns, rows)
        if kind == "csv.gz":
            path.write_bytes(gzip.compress(path.read_bytes()))
    summary = _import(service, path)
    assert _mart_totals(service) == {"USD": (_total(rows), _total(rows, "EffectiveCost"))}
    # The load report kept with the run: detected format and version, rows, totals per currency and month.
    (report,) = summary.steps["ingest"].detail["files"]
    assert report["format"] == f"FOCUS {version}" and report["rows"] == len(rows)
    assert Decimal(report["totals"]["USD"]["2026-09"]).quantize(Decimal("0.01")) == _total(rows)

    start, end = START, START + timedelta(days=30)
    by_cloud = queries.cost_breakdown(service.engine, start=start, end=end, group_by="provider", grain="monthly")
    got = {g: Decimal(v).quantize(Decimal("0.01")) for g, v in by_cloud.groupby("group")["cost_exact"].sum().items()}
    want = {cloud: _total([r for i, r in enumerate(rows) if list(_CLOUDS)[i % 4] == cloud]) for cloud in _CLOUDS}
    assert got == want
    aws = queries.cost_breakdown(
        service.engine, start=start, end=end, group_by="service_provider", filters={"provider": ["AWS"]}
    )
    assert set(aws["group"]) == {"AWS"}

    silver = service.lake.read_arrow("silver/costs").to_pylist()
    sample = next(r for r in silver if r["ProviderName"] == "AWS")
    assert sample["PublisherName"] == "Amazon Web Services, Inc."
    if version in ("1.2", "1.3"):
        assert sample["InvoiceId"].startswith("INV-") and sample["PricingCurrency"] == "USD"
    if version == "1.3":
        assert sample["ServiceProviderName"] == "AWS" and sample["HostProviderName"] == "AWS"
    if version in ("1.0", "1.1"):
        assert sample["SkuId" if version == "1.0" else "SkuMeter"]
    assert all(r["AllocatedMethodId"] is None for r in silver)  # the literal NULL is null
    assert {k for r in silver for k, _ in r["Tags"]} <= {"team", "env"}  # keys trimmed and case-folded


def _export_run(folder, run_id: str, rows: list[dict[str, str]], *, dataset: str, parquet: bool = False, parts=2):
    """An Azure export run as Cost Management writes it: part files, then manifest.json naming them."""
    import gzip
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    run = folder / "costlake-daily" / "20260901-20260930" / run_id
    run.mkdir(parents=True)
    blobs = []
    for n in range(parts):
        chunk = rows[n::parts]
        name = f"part_{n}_0001.{'snappy.parquet' if parquet else 'csv.gz'}"
        if parquet:
            table = pa.table({c: [r.get(c, "") for r in chunk] for c in EA_COLUMNS})
            # Typed as Azure writes them: numbers as doubles are not exact, so costs stay decimal text here.
            pq.write_table(table, run / name, compression="snappy")
        else:
            _write(run / "tmp.csv", EA_COLUMNS, chunk)
            (run / name).write_bytes(gzip.compress((run / "tmp.csv").read_bytes()))
            (run / "tmp.csv").unlink()
        blobs.append(
            {"blobName": f"exports/costlake-daily/20260901-20260930/{run_id}/{name}", "dataRowCount": len(chunk)}
        )
    manifest = {
        "manifestVersion": "2024-04-01",
        "dataRowCount": len(rows),
        "blobCount": parts,
        "exportConfig": {"exportName": "costlake-daily", "type": dataset, "dataVersion": "2024-08-01",
                         "resourceId": f"/subscriptions/{SUBS[0]}/providers/Microsoft.CostManagement/exports/x"},
        "runInfo": {"runId": run_id, "startDate": "2026-09-01T00:00:00", "endDate": "2026-09-30T00:00:00"},
        "blobs": blobs,
    }  # fmt: skip
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize("parquet", [False, True], ids=["csv.gz", "parquet"])
def test_an_export_run_folder_is_one_delivery_and_a_later_run_replaces_it(service, tmp_path, parquet):
    rows = [_ea_row(i, Decimal(i + 1) / 7) for i in range(30)]
    first = _export_run(tmp_path / "a", "run-1", rows, dataset="AmortizedCost", parquet=parquet)
    _import(service, first)
    assert _mart_totals(service) == {"EUR": (None, _total(rows, "CostInBillingCurrency"))}

    # The next day's run of the same export re-delivers the month with one row re-rated.
    rerated = [dict(r) for r in rows]
    rerated[3]["CostInBillingCurrency"] = "99.5"
    second = _export_run(tmp_path / "b", "run-2", rerated, dataset="AmortizedCost", parquet=parquet, parts=3)
    _import(service, second)
    assert _mart_totals(service) == {"EUR": (None, _total(rerated, "CostInBillingCurrency"))}
    assert _mismatches(service) == 0


def test_a_run_folder_with_a_missing_part_or_other_row_counts_is_refused_and_loads_nothing(service, tmp_path):
    import json

    rows = [_ea_row(i, Decimal(i + 1)) for i in range(10)]
    run = _export_run(tmp_path / "a", "run-1", rows, dataset="ActualCost")
    (run / "part_1_0001.csv.gz").unlink()
    refused = service.run(steps=STEPS, sources=["files"], trigger="test", options={"files": [str(run)]})
    assert refused.status == "failed" and "not in" in refused.error and "wait until" in refused.error

    run = _export_run(tmp_path / "b", "run-2", rows, dataset="ActualCost")
    doc = json.loads((run / "manifest.json").read_text())
    doc["blobs"][0]["dataRowCount"] += 1
    (run / "manifest.json").write_text(json.dumps(doc))
    refused = service.run(steps=STEPS, sources=["files"], trigger="test", options={"files": [str(run)]})
    assert refused.status == "failed" and "the manifest says" in refused.error
    with service.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mart.fact_cost_daily")).scalar_one() == 0


def test_an_export_run_dropped_in_the_inbox_is_taken_once_its_manifest_is_there(service, tmp_path):
    import shutil

    rows = [_ea_row(i, Decimal(i + 1) / 3) for i in range(12)]
    run = _export_run(tmp_path / "export", "run-7", rows, dataset="ActualCost")
    inbox = service.settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / "run-7"
    shutil.copytree(run, target)
    (target / "manifest.json").rename(tmp_path / "manifest.json")  # still being written: no manifest yet
    waiting = service.run(steps=STEPS, sources=["inbox"], trigger="test")
    assert waiting.status == "succeeded" and waiting.steps["ingest"].detail["inbox"] == []
    (tmp_path / "manifest.json").rename(target / "manifest.json")
    done = service.run(steps=STEPS, sources=["inbox"], trigger="test")
    assert done.status == "succeeded", done.error
    assert [i["status"] for i in done.steps["ingest"].detail["inbox"]] == ["sent"]  # moved once bronze held it
    assert (inbox / "processed" / "run-7" / "manifest.json").exists() and not target.exists()
    assert _mart_totals(service) == {"EUR": (_total(rows, "CostInBillingCurrency"), None)}
