"""Synthetic gold tables (vectorised, seeded) for mart tests and the mart benchmark; written through `Lake`."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.lake.catalog import GOLD_COST_BY_TAG, GOLD_COST_DAILY, GOLD_RESOURCE_TAGS, MONEY
from backend.lake.delta import Lake

SERVICES = [
    ("Virtual Machines", "Compute"),
    ("Storage", "Storage"),
    ("Azure SQL Database", "Databases"),
    ("Azure Kubernetes Service", "Containers"),
    ("Bandwidth", "Networking"),
    ("Azure Monitor", "Management and Governance"),
    ("Key Vault", "Security"),
    ("", ""),  # a row whose service gold could not name: the mart's "(none)" member
]
REGIONS = ["westeurope", "northeurope", "eastus", "westus2", ""]
COMBOS = 600
PRICING = ["OnDemand", "OnDemand", "OnDemand", "Reservation", "SavingsPlan", "Spot"]


def _strings(indices: np.ndarray, values: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values, pa.string())).cast(
        pa.string()
    )


def _money(micros: np.ndarray) -> pa.Array:
    """Exact decimal(28,12) from integer micro-units (no float rounding on the way)."""
    unscaled = micros.astype(np.int64) * 1_000_000  # micro-units -> scale 12
    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(MONEY, len(unscaled), [None, pa.py_buffer(words.tobytes())])


def gold_cost_daily(
    *,
    start: dt.date,
    days: int,
    rows_per_day: int,
    resources: int = 500,
    subscriptions: int = 4,
    seed: int = 0,
    source: str = "demo",
    run_id: str = "synthetic",
) -> pa.Table:
    """`days * rows_per_day` rows of gold cost_daily; resource r's attributes are a pure function of r."""
    rng = np.random.default_rng(seed)
    n = days * rows_per_day
    day = np.repeat(np.arange(days), rows_per_day)
    resource = rng.integers(0, resources, n)
    meter = rng.integers(0, 3, n)
    # Resources share a few hundred (subscription, group, service, region, pricing) combinations, as real
    # estates do; that is what makes the aggregates much smaller than the fact.
    combo = resource % COMBOS
    sub = combo % subscriptions
    rg = (combo // 7) % 12
    service = combo % len(SERVICES)
    region = (combo // 3) % len(REGIONS)
    pricing = (combo // 5) % len(PRICING)
    cost = rng.integers(1, 50_000_000, n)  # up to 50 currency units, in micro-units
    dates = pa.array(np.datetime64(start, "D") + day, pa.date32())
    sub_ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(subscriptions)]
    rg_names = [f"rg-app-{i:02d}" for i in range(12)]
    res_ids = [
        f"/subscriptions/{sub_ids[r % COMBOS % subscriptions]}/resourcegroups/{rg_names[(r % COMBOS // 7) % 12]}"
        f"/providers/x/r{r}"
        for r in range(resources)
    ]
    columns = {
        "charge_date": dates,
        "billing_account_id": _strings(np.zeros(n, np.int32), ["ba-1"]),
        "billing_account_name": _strings(np.zeros(n, np.int32), ["Contoso EA"]),
        "subscription_id": _strings(sub, sub_ids),
        "subscription_name": _strings(sub, [f"sub-{i}" for i in range(subscriptions)]),
        "resource_group": _strings(rg, rg_names),
        "resource_id": _strings(resource, res_ids),
        "resource_name": _strings(resource, [f"r{r}" for r in range(resources)]),
        "resource_type": _strings(service, [f"type/{s}" for s, _ in SERVICES]),
        "region": _strings(region, REGIONS),
        "service_name": _strings(service, [s for s, _ in SERVICES]),
        "service_category": _strings(service, [c for _, c in SERVICES]),
        "meter_category": _strings(service, [c for _, c in SERVICES]),
        "meter_name": _strings(meter, ["Hours", "GB Month", "Operations"]),
        "pricing_model": _strings(pricing, PRICING),
        "charge_category": _strings(np.zeros(n, np.int32), ["Usage"]),
        "billing_currency": _strings(np.zeros(n, np.int32), ["EUR"]),
        "pricing_unit": _strings(meter, ["1 Hour", "1 GB/Month", "10K"]),
        "actual_cost": _money(cost),
        "amortized_cost": _money(np.where(pricing == 3, cost * 9 // 10, cost)),
        "list_cost": _money(cost * 11 // 10),
        "quantity": _money(rng.integers(1, 24_000_000, n)),
        "actual_cost_converted": pa.nulls(n, MONEY),
        "source": _strings(np.zeros(n, np.int32), [source]),
        "row_count": pa.array(np.ones(n, np.int64)),
        "run_id": _strings(np.zeros(n, np.int32), [run_id]),
        "charge_month": pc.strftime(dates.cast(pa.timestamp("s")), "%Y-%m"),
        "provider_name": _strings(np.zeros(n, np.int32), ["Microsoft"]),
        "service_provider_name": _strings(np.zeros(n, np.int32), ["Microsoft"]),
        "publisher_name": _strings(np.zeros(n, np.int32), ["Microsoft"]),
        "invoice_issuer_name": _strings(np.zeros(n, np.int32), ["Microsoft"]),
        "amortized_cost_converted": pa.nulls(n, MONEY),
        # Savings measures (a source without ContractedCost or commitment status: null, "not available").
        "contracted_cost": pa.nulls(n, MONEY),
        "commitment_used_cost": pa.nulls(n, MONEY),
        "commitment_unused_cost": pa.nulls(n, MONEY),
    }
    return pa.table(columns, schema=GOLD_COST_DAILY.schema)


def gold_resource_tags(daily: pa.Table, *, run_id: str = "synthetic") -> pa.Table:
    """env on every resource, team on four in five: the rest are "untagged" for team."""
    resources = pc.unique(daily["resource_id"]).to_pylist()
    first, last = pc.min(daily["charge_date"]).as_py(), pc.max(daily["charge_date"]).as_py()
    rows = []
    for i, rid in enumerate(sorted(resources)):
        rows.append((rid, "env", ["prod", "dev", "test"][i % 3]))
        if i % 5:
            rows.append((rid, "team", f"team-{i % 4}"))
    rid, key, value = (list(c) for c in zip(*rows, strict=True))
    n = len(rows)
    return pa.table(
        {
            "resource_id": rid,
            "tag_key": key,
            "tag_value": value,
            "first_seen": pa.array([first] * n, pa.date32()),
            "last_seen": pa.array([last] * n, pa.date32()),
            "run_id": [run_id] * n,
        },
        schema=GOLD_RESOURCE_TAGS.schema,
    )


def gold_cost_by_tag(daily: pa.Table, tags: pa.Table, *, run_id: str = "synthetic") -> pa.Table:
    """Cost per day, subscription and tag key/value, with "untagged" for resources lacking the key."""
    keys = pc.unique(tags["tag_key"]).to_pylist()
    costs = daily.select(
        [
            "charge_date",
            "subscription_id",
            "resource_id",
            "billing_currency",
            "actual_cost",
            "amortized_cost",
            "charge_month",
        ]
    )
    parts = []
    for key in keys:
        one = tags.filter(pc.equal(tags["tag_key"], key)).select(["resource_id", "tag_value"])
        joined = costs.join(one, "resource_id", join_type="left outer")
        joined = joined.set_column(
            joined.column_names.index("tag_value"), "tag_value", pc.fill_null(joined["tag_value"], "untagged")
        )
        grouped = joined.group_by(
            ["charge_date", "subscription_id", "tag_value", "billing_currency", "charge_month"]
        ).aggregate([("actual_cost", "sum"), ("amortized_cost", "sum")])
        n = grouped.num_rows
        parts.append(
            pa.table(
                {
                    "charge_date": grouped["charge_date"],
                    "subscription_id": grouped["subscription_id"],
                    "tag_key": [key] * n,
                    "tag_value": grouped["tag_value"],
                    "billing_currency": grouped["billing_currency"],
                    "actual_cost": grouped["actual_cost_sum"].cast(MONEY),
                    "amortized_cost": grouped["amortized_cost_sum"].cast(MONEY),
                    "run_id": [run_id] * n,
                    "charge_month": grouped["charge_month"],
                },
                schema=GOLD_COST_BY_TAG.schema,
            )
        )
    return pa.concat_tables(parts)


def write_gold(lake: Lake, daily: pa.Table, *, tags: bool = True, run_id: str = "synthetic") -> None:
    """Replace the months `daily` covers in gold (and, with `tags`, the tag tables), like the gold job does."""
    months = sorted(pc.unique(daily["charge_month"]).to_pylist())
    predicate = "charge_month IN (" + ", ".join(f"'{m}'" for m in months) + ")"
    lake.replace_where(
        GOLD_COST_DAILY.name, daily, predicate=predicate, run_id=run_id, partition_by=GOLD_COST_DAILY.partition_by
    )
    if tags:
        resource_tags = gold_resource_tags(daily, run_id=run_id)
        lake.overwrite(GOLD_RESOURCE_TAGS.name, resource_tags, run_id=run_id)
        by_tag = gold_cost_by_tag(daily, resource_tags, run_id=run_id)
        lake.replace_where(
            GOLD_COST_BY_TAG.name,
            by_tag,
            predicate=predicate,
            run_id=run_id,
            partition_by=GOLD_COST_BY_TAG.partition_by,
        )
