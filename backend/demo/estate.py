"""A seeded, vectorised generator of a realistic Azure estate in FOCUS 1.2 columns, with labelled injected anomalies.

Shape of the estate (all derived from `seed`; same arguments -> byte-identical tables):

- several subscriptions of different sizes, each with 3-6 resource groups named after workloads;
- resources of 25+ services (prices.py) with plausible meters and list prices; one row per
  (resource, meter, day, charge category, pricing model), so that natural key is unique;
- resources are created and deleted during the window, small enough that the creations and
  deletions of one day move their service's and resource group's daily total by < ~10% (resources
  that cannot be that small, like one firewall, stay for the whole window): churn is no anomaly;
- weekly seasonality (weekend dip per service), monthly growth per usage meter, lognormal noise;
- reservations (VMs) and a compute savings plan in production subscriptions: the monthly purchase
  appears in BilledCost (ChargeCategory=Purchase, EffectiveCost 0), covered usage has BilledCost 0
  and EffectiveCost > 0, and unused commitment appears daily as Usage with CommitmentDiscountStatus
  "Unused"; so actual and amortized differ per day but agree per full month;
- spot VMs in dev/test/sandbox subscriptions (PricingCategory Dynamic);
- a negotiated discount per service category (prices.NEGOTIATED_DISCOUNT): ContractedCost is the usage
  at the price list's (contract) prices, ListCost above it; commitments discount the contracted price;
- idle resources in a resource group without compute (prices.IDLE_RESOURCES): a deallocated VM whose
  OS disk is still billed, an unattached premium disk, an unused public IP and a zero-quantity fee;
- tags as JSON with missing keys, inconsistent key case and stray spaces, and inconsistent values.

Injected anomalies (ground truth in `Estate.labels`), sized so that a detector working on daily
totals per service or per resource group can find them with high precision and recall:

- every anomaly starts after at least 60 days of history (detectors need a baseline);
- its extra cost per day is `relative_size` x the baseline of the largest of the affected service
  series, resource group series and the labelled dimension's series (baseline = mean daily
  EffectiveCost over the 28 days before the start, earlier anomalies and unused commitments
  included, exactly as the rows will show it; the idle resources' few dollars a day are in the recorded
  baseline only, so they never change which anomalies a seed draws), with relative_size drawn from
  spike 0.5-1.0 (1-5 days), level_shift 0.4-0.7 (lasting to the end), new_cost 0.4-0.8 (a new
  resource from the start to the end). So an anomaly is >= 40% of the day's baseline of its
  service, its resource group and its own (subscription or tag) series, against day-to-day noise
  of a few percent at that level;
- distinct anomalies hit distinct services and resource groups whenever the estate is big enough,
  so one anomaly never hides another.
- anomalies are injected on on-demand usage only, so BilledCost and EffectiveCost both carry them.
"""

from __future__ import annotations

import calendar
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.config import Settings
from backend.demo.prices import (
    COST_CENTERS,
    IDLE_RESOURCE_GROUP,
    IDLE_RESOURCES,
    NEGOTIATED_DISCOUNT,
    OWNERS,
    REGION_WEIGHTS,
    REGIONS,
    SERVICES,
    SUBSCRIPTIONS,
    WORKLOADS,
)
from backend.lake.catalog import MONEY, UTC_TS
from backend.sources.base import ContentType, PayloadFormat, RawChunk
from backend.sources.chunks import in_order, parquet_pieces, payload_budget
from backend.sources.cursors import CursorRow, CursorStore

log = logging.getLogger(__name__)

SCALE = 12  # decimal places of MONEY
_UNITS = 10**SCALE
_COST_DECIMALS = 10  # costs are rounded to 1e-10 (Azure's exports show about as many)
_QTY_DECIMALS = 6
_DAY_US = 86_400 * 1_000_000
_MAX_UNITS = np.iinfo(np.int64).max  # int64 unscaled at scale 12: |value| < 9.2 million per row

RESERVATION_FACTOR = 0.6  # 1-year VM reservation: 40% below pay-as-you-go
SAVINGS_PLAN_FACTOR = 0.68  # 1-year compute savings plan
SPOT_FACTOR = 0.2  # spot price as a share of list

ON_DEMAND, RESERVATION, SAVINGS_PLAN, SPOT = 0, 1, 2, 3
PRICING_MODELS = ("OnDemand", "Reservation", "SavingsPlan", "Spot")
PRICING_CATEGORY = ("Standard", "Committed", "Committed", "Dynamic")

ANOMALY_KINDS = ("spike", "level_shift", "new_cost")
ANOMALY_LEVELS = ("service", "resource_group", "subscription", "tag")
LEVEL_DIMENSION = {
    "service": "ServiceName",
    "resource_group": "x_ResourceGroupName",
    "subscription": "SubAccountId",
    "tag": "Tags.team",
}
MIN_HISTORY_DAYS = 60
# An anomaly is carried by one stream (one row per day), so its extra quantity and cost per row must
# stay well inside MONEY's int64 range (9.2 million per row): in big estates a subscription-sized
# anomaly on a cheap meter (tokens at $0.0002 per 1K) would need ~1e10 units a day.
MAX_ANOMALY_QTY = 1e6
MAX_ANOMALY_COST = 1e6
BASELINE_DAYS = 28

STRING = pa.string()
# The plain (non-dictionary) schema of `Estate.costs`, column by column in FOCUS order then Azure extras.
FOCUS_SCHEMA = pa.schema(
    [
        ("BillingAccountId", STRING),
        ("BillingAccountName", STRING),
        ("BillingAccountType", STRING),
        ("BillingPeriodStart", UTC_TS),
        ("BillingPeriodEnd", UTC_TS),
        ("ChargePeriodStart", UTC_TS),
        ("ChargePeriodEnd", UTC_TS),
        ("SubAccountId", STRING),
        ("SubAccountName", STRING),
        ("SubAccountType", STRING),
        ("ResourceId", STRING),
        ("ResourceName", STRING),
        ("ResourceType", STRING),
        ("RegionId", STRING),
        ("RegionName", STRING),
        ("ServiceName", STRING),
        ("ServiceCategory", STRING),
        ("ChargeCategory", STRING),
        ("ChargeClass", STRING),
        ("ChargeDescription", STRING),
        ("ChargeFrequency", STRING),
        ("PricingCategory", STRING),
        ("PricingQuantity", MONEY),
        ("PricingUnit", STRING),
        ("ConsumedQuantity", MONEY),
        ("ConsumedUnit", STRING),
        ("ListUnitPrice", MONEY),
        ("ContractedUnitPrice", MONEY),
        ("BilledCost", MONEY),
        ("EffectiveCost", MONEY),
        ("ListCost", MONEY),
        ("ContractedCost", MONEY),
        ("BillingCurrency", STRING),
        ("CommitmentDiscountId", STRING),
        ("CommitmentDiscountName", STRING),
        ("CommitmentDiscountType", STRING),
        ("CommitmentDiscountCategory", STRING),
        ("CommitmentDiscountStatus", STRING),
        ("Tags", STRING),
        ("InvoiceIssuerName", STRING),
        ("ProviderName", STRING),
        ("PublisherName", STRING),
        ("x_ResourceGroupName", STRING),
        ("x_ResourceType", STRING),
        ("x_MeterCategory", STRING),
        ("x_MeterSubCategory", STRING),
        ("x_MeterName", STRING),
        ("x_MeterId", STRING),
        ("x_PricingModel", STRING),
        ("x_ReservationId", STRING),
    ]
)
NATURAL_KEY = ("ResourceId", "x_MeterId", "ChargePeriodStart", "ChargeCategory", "x_PricingModel")

LABEL_SCHEMA = pa.schema(
    [
        ("anomaly_id", pa.int32()),
        ("kind", STRING),  # spike / level_shift / new_cost
        ("level", STRING),  # service / resource_group / subscription / tag
        ("dimension", STRING),  # the FOCUS column (or Tags.<key>) the level refers to
        ("value", STRING),  # the dimension's value (tag values canonical: trimmed, lower case)
        ("start_date", pa.date32()),
        ("end_date", pa.date32()),  # inclusive
        ("size_per_day", pa.float64()),  # extra cost per day, billing currency (Billed = Effective)
        ("baseline_per_day", pa.float64()),  # mean daily EffectiveCost of the labelled dimension before
        ("relative_size", pa.float64()),  # size / baseline of the labelled dimension
        ("relative_to_service", pa.float64()),
        ("relative_to_resource_group", pa.float64()),
        ("subscription_id", STRING),  # SubAccountId of the injected resource
        ("subscription_name", STRING),
        ("resource_group", STRING),
        ("service_name", STRING),
        ("resource_id", STRING),
        ("meter_name", STRING),
    ]
)


@dataclass(frozen=True)
class Subscription:
    id: str  # the subscription GUID
    name: str
    environment: str

    @property
    def sub_account_id(self) -> str:
        return f"/subscriptions/{self.id}"


@dataclass(frozen=True)
class Estate:
    """A generated estate: `costs` (FOCUS rows; string columns dictionary-encoded) and `labels` (ground truth)."""

    costs: pa.Table
    labels: pa.Table
    seed: int
    start: date
    end: date  # exclusive
    currency: str
    billing_account_id: str
    billing_account_name: str
    subscriptions: tuple[Subscription, ...] = field(default_factory=tuple)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    def plain_costs(self) -> pa.Table:
        """`costs` with plain string columns (FOCUS_SCHEMA), as a FOCUS Parquet file would hold them."""
        return self.costs.cast(FOCUS_SCHEMA)

    def write_labels(self, path: str | Path) -> Path:
        """Write the anomaly labels as CSV, JSON (records) or Parquet, chosen by the file suffix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            pq.write_table(self.labels, path)
        elif suffix == ".json":
            records = self.labels.to_pylist()
            path.write_text(json.dumps(records, indent=2, default=str) + "\n", encoding="utf-8")
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(self.labels, path)
        else:
            raise ValueError(f"labels path {path} must end in .csv, .json or .parquet")
        return path


# --- helpers ------------------------------------------------------------------------------------
def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _guid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _decimal(units: np.ndarray) -> pa.Array:
    """An exact decimal128(28, 12) array from int64 unscaled values (no float conversion on the way)."""
    units = np.ascontiguousarray(units, dtype=np.int64)
    words = np.empty((len(units), 2), dtype=np.int64)
    words[:, 0] = units
    # Sign extension into the high 64 bits (little-endian two's complement 128-bit integers).
    np.right_shift(units, 63, out=words[:, 1])
    return pa.Array.from_buffers(MONEY, len(units), [None, pa.py_buffer(words)])


def _units(values: np.ndarray, decimals: int) -> np.ndarray:
    # In place wherever possible: at millions of rows every fresh temporary costs more in page faults
    # than the arithmetic (5M rows: 0.50 s -> 0.05 s for this function).
    scaled = np.asarray(values, dtype=np.float64) * 10.0**decimals
    np.rint(scaled, out=scaled)
    if len(scaled) and max(scaled.max(), -scaled.min()) * 10.0 ** (SCALE - decimals) >= _MAX_UNITS:
        raise ValueError("a synthetic amount exceeds 9.2 million per row; lower the estate size or scale")
    units = scaled.astype(np.int64)
    units *= 10 ** (SCALE - decimals)
    return units


def _timestamps(epoch_days: np.ndarray) -> pa.Array:
    micros = np.array(epoch_days, dtype=np.int64)  # a copy: multiplied in place below
    micros *= _DAY_US
    return pa.Array.from_buffers(UTC_TS, len(micros), [None, pa.py_buffer(micros)])


def _indices(codes_per_line: np.ndarray, rows_per_line: np.ndarray) -> pa.Array:
    """Per-row dictionary indices, zero-copy into Arrow; code -1 means null.

    Rows are generated line by line, so a column is each line's code repeated for its rows
    (np.repeat streams through memory; a gather would not)."""
    codes_per_line = np.ascontiguousarray(codes_per_line, dtype=np.int32)
    null_line = codes_per_line < 0
    codes = np.repeat(np.where(null_line, 0, codes_per_line).astype(np.int32), rows_per_line)
    validity = None
    if null_line.any():
        validity = pa.py_buffer(np.packbits(np.repeat(~null_line, rows_per_line), bitorder="little"))
    return pa.Array.from_buffers(pa.int32(), len(codes), [validity, pa.py_buffer(codes)])


def _codes(values: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Per-line codes into a dictionary of distinct values (None -> -1), first-seen order."""
    index: dict[str, int] = {}
    codes = np.empty(len(values), dtype=np.int32)
    for i, value in enumerate(values):
        codes[i] = -1 if value is None else index.setdefault(value, len(index))
    return codes, list(index)


def _expand(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows for lines active on days [start, end): the line of each row and its day index."""
    lengths = np.maximum(ends - starts, 0).astype(np.int64)
    line = np.repeat(np.arange(len(starts), dtype=np.int32), lengths)
    offsets = np.cumsum(lengths) - lengths
    day = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets - starts, lengths)
    return line, day.astype(np.int32)


_TAG_KEYS = {
    # canonical key -> (spellings as found in real estates, their probabilities), probability the key is missing
    "env": ((("env", 0.6), ("Env", 0.15), ("environment", 0.1), ("env ", 0.05), ("ENV", 0.1)), 0.1),
    "team": ((("team", 0.65), ("Team", 0.2), (" team", 0.08), ("TEAM ", 0.07)), 0.2),
    "costcenter": ((("costcenter", 0.5), ("CostCenter", 0.3), ("cost-center", 0.1), ("Cost Center", 0.1)), 0.35),
    "app": ((("app", 0.6), ("App", 0.25), ("application", 0.15)), 0.25),
    "owner": ((("owner", 0.7), ("Owner", 0.3)), 0.5),
}
_ENV_SPELLINGS = {
    "prod": ("prod", "Prod", "production", "PROD"),
    "dev": ("dev", "Dev", "development"),
    "test": ("test", "Test", "qa"),
    "sandbox": ("sandbox", "Sandbox", "sbx"),
}


# --- the generator -------------------------------------------------------------------------------
def generate_estate(
    *,
    seed: int = 42,
    start: date = date(2025, 1, 1),
    months: int = 13,
    target_rows: int = 500_000,
    subscriptions: int = 6,
    anomalies: int = 12,
    currency: str = "USD",
    billing_account_id: str = "8611537",
    billing_account_name: str = "Contoso Ltd",
) -> Estate:
    """Generate an estate of about `target_rows` cost rows from `start` for `months` months.

    Within ~2% from about 50k rows; smaller estates overshoot by up to ~2,500 rows (whole resources,
    commitment lines and new_cost resources come on top), plus one row per idle resource and day
    (prices.IDLE_RESOURCES, added whatever the size)."""
    if not 1 <= subscriptions <= len(SUBSCRIPTIONS):
        raise ValueError(f"subscriptions must be between 1 and {len(SUBSCRIPTIONS)}")
    if months < 1 or target_rows < 1000:
        raise ValueError("months must be >= 1 and target_rows >= 1000")
    rng = np.random.default_rng(seed)
    cal = _Calendar(start, _add_months(start, months))
    ndays = cal.ndays

    # --- subscriptions and resource groups ---
    subs = tuple(Subscription(_guid(rng), name, env) for name, env, _ in SUBSCRIPTIONS[:subscriptions])
    sub_weight = np.array([w for _, _, w in SUBSCRIPTIONS[:subscriptions]])
    sub_weight /= sub_weight.sum()
    rg_names: list[str] = []
    rg_sub_l: list[int] = []
    rg_workload_l: list[int] = []
    for s, sub in enumerate(subs):
        suffix = sub.name.split("-", 1)[-1]
        for w in sorted(rng.choice(len(WORKLOADS), size=int(rng.integers(3, 7)), replace=False)):
            rg_names.append(f"rg-{WORKLOADS[w][0]}-{suffix}")
            rg_sub_l.append(s)
            rg_workload_l.append(int(w))
    rg_sub = np.array(rg_sub_l)
    rg_workload = np.array(rg_workload_l)
    rg_weight = rng.uniform(0.5, 2.0, len(rg_names))

    # --- resources: over-generated i.i.d., then cut where the row count reaches the target ---
    nsvc = len(SERVICES)
    max_meters = max(len(s.meters) for s in SERVICES)
    svc_weight = np.array([s.weight for s in SERVICES])
    svc_nmeters = np.array([len(s.meters) for s in SERVICES])
    n = 2 * (int(target_rows / (ndays * 0.7 * 1.6)) + 50)
    r_svc = rng.choice(nsvc, size=n, p=svc_weight / svc_weight.sum())
    r_sub = rng.choice(subscriptions, size=n, p=sub_weight)
    u = rng.random(n)
    r_rg = np.empty(n, dtype=np.int64)
    for s in range(subscriptions):
        idx = np.flatnonzero(rg_sub == s)
        cdf = np.cumsum(rg_weight[idx]) / rg_weight[idx].sum()
        mask = r_sub == s
        r_rg[mask] = idx[np.minimum(np.searchsorted(cdf, u[mask]), len(idx) - 1)]
    primary_region = rng.choice(len(REGIONS), size=subscriptions, p=REGION_WEIGHTS)
    r_region = np.where(rng.random(n) < 0.75, primary_region[r_sub], rng.choice(len(REGIONS), size=n, p=REGION_WEIGHTS))
    from_start = rng.random(n) < 0.65
    r_created = np.where(from_start, 0, rng.integers(1, max(ndays - 7, 2), size=n))
    deleted = rng.random(n) < 0.25
    life = 7 + rng.exponential(ndays / 3, size=n).astype(np.int64)
    r_deleted = np.where(deleted, np.minimum(r_created + life, ndays), ndays)
    # Resources that come and go are small, so churn is a gentle drift, not an unlabelled anomaly.
    r_size = np.exp(rng.normal(0.0, 0.8, size=n)) * np.where(~from_start | deleted, 0.25, 1.0)
    r_tags = _TagPlan.draw(rng, n)
    j = np.arange(max_meters)[None, :]
    valid = j < svc_nmeters[r_svc][:, None]
    one = np.array([s.one_meter for s in SERVICES])[r_svc]
    pick = (rng.random(n) * svc_nmeters[r_svc]).astype(np.int64)
    take = np.where(one[:, None], j == pick[:, None], valid & ((j == 0) | (rng.random((n, max_meters)) < 0.6)))
    nrg = len(rg_names)
    # Taming churn pins some resources to the whole window (more rows), so cut again until stable.
    for _ in range(8):
        per_res_rows = take.sum(axis=1) * (r_deleted - r_created)
        nres = int(np.searchsorted(np.cumsum(per_res_rows), target_rows * 0.985)) + 1
        if nres > n:
            raise RuntimeError(
                "resource over-generation fell short of target_rows; the row estimate needs a bigger margin"
            )
        if not _tame_churn(take[:nres], r_svc[:nres], r_rg[:nres], r_created, r_deleted, r_size, nrg, ndays):
            break
    r_svc, r_sub, r_rg, r_region = r_svc[:nres], r_sub[:nres], r_rg[:nres], r_region[:nres]
    r_created, r_deleted, r_size, take = r_created[:nres], r_deleted[:nres], r_size[:nres], take[:nres]
    r_tags = r_tags.cut(nres)
    st_res, st_meter = np.nonzero(take)
    streams = _Streams.build(rng, st_res, st_meter, r_svc, r_created, r_deleted, r_size)

    # --- pricing model per stream: reservations and savings plan in prod, spot elsewhere ---
    prod = np.array([sub.environment == "prod" for sub in subs])[r_sub[st_res]]
    svc_of = r_svc[st_res]
    reservable = np.array([s.reservable for s in SERVICES])[svc_of]
    sp_ok = np.array([s.savings_plan for s in SERVICES])[svc_of]
    steady = streams.steady
    from0 = r_created[st_res] == 0
    whole = from0 & (r_deleted[st_res] == ndays)
    draw = rng.random(len(st_res))
    model = np.full(len(st_res), ON_DEMAND, dtype=np.int8)
    # Reservations also cover VMs deleted later: their commitment then shows up as unused.
    model[reservable & steady & prod & from0 & (draw < 0.4)] = RESERVATION
    model[(model == ON_DEMAND) & sp_ok & steady & prod & whole & (draw > 0.7)] = SAVINGS_PLAN
    model[reservable & steady & ~prod & (draw < 0.3)] = SPOT
    streams.model = model

    # --- usage rows ---
    line, day = _expand(streams.start, streams.end)
    qty = streams.quantity(rng, line, day, cal)

    # --- anomalies (may add new resources) ---
    team_of_rg = np.array([_TEAMS.index(WORKLOADS[w][2]) for w in rg_workload])
    res_team = np.where(r_tags.has("team"), team_of_rg[r_rg], -1)
    injected, new = _inject_anomalies(
        rng,
        count=anomalies,
        streams=streams,
        line=line,
        day=day,
        qty=qty,
        dims=(r_svc[st_res], r_rg[st_res], r_sub[st_res], res_team[st_res]),
        ndays=ndays,
        idle=(subs.index(_idle_subscription(subs)), _idle_daily_cost(cal)),
    )
    if new:
        first_stream, first_res = len(streams.start), nres
        src_res = np.array([st_res[a.stream] for a in new])
        r_svc = np.concatenate([r_svc, r_svc[src_res]])
        r_rg = np.concatenate([r_rg, r_rg[src_res]])
        r_sub = np.concatenate([r_sub, r_sub[src_res]])
        r_region = np.concatenate([r_region, r_region[src_res]])
        r_tags = r_tags.extend(src_res)  # a new resource is tagged like its neighbour (same team)
        nres += len(new)
        st_res = np.concatenate([st_res, np.arange(first_res, nres)])
        st_meter = np.concatenate([st_meter, np.zeros(len(new), dtype=np.int64)])
        streams.add_new(new)
        e_line, e_day = _expand(streams.start[first_stream:], streams.end[first_stream:])
        e_qty = streams.base_qty[first_stream:][e_line] * np.exp(0.03 * rng.standard_normal(len(e_line)))
        line = np.concatenate([line, e_line + first_stream])
        day = np.concatenate([day, e_day])
        qty = np.concatenate([qty, e_qty])
        for i, a in enumerate(new):
            a.stream = first_stream + i

    # --- exact money: usage rows ---
    nstreams = len(streams.start)
    model = streams.model
    qty = np.round(qty, _QTY_DECIMALS)
    m = model[line]
    list_float = qty * streams.price[line]
    list_units = _units(list_float, _COST_DECIMALS)
    factor = np.choose(m, [1.0, RESERVATION_FACTOR, SAVINGS_PLAN_FACTOR, SPOT_FACTOR])
    eff_units = np.where(m == ON_DEMAND, list_units, _units(list_float * factor, _COST_DECIMALS))
    billed_units = np.where((m == RESERVATION) | (m == SAVINGS_PLAN), 0, eff_units)

    # --- commitments: one reservation per (subscription, VM size), one savings plan per subscription ---
    covered = (model == RESERVATION) | (model == SAVINGS_PLAN)
    sub_of_stream = r_sub[st_res]
    raw_key = np.where(model == RESERVATION, sub_of_stream * 1000 + st_meter * 10 + 1, sub_of_stream * 1000 + 2)
    commit_keys = np.unique(raw_key[covered])
    ncommit = len(commit_keys)
    stream_commit = np.full(nstreams, -1, dtype=np.int64)
    stream_commit[covered] = np.searchsorted(commit_keys, raw_key[covered])
    # Covered streams run at a fixed size, so each one's daily effective cost is constant; the
    # commitment was bought for all of them, and whatever they do not use is "unused".
    first_row = np.full(nstreams, -1, dtype=np.int64)
    first_row[line[::-1]] = np.arange(len(line) - 1, -1, -1)
    stream_daily = np.zeros(nstreams, dtype=np.int64)
    has_rows = first_row >= 0
    stream_daily[has_rows] = eff_units[first_row[has_rows]]
    commit_daily = np.zeros(ncommit, dtype=np.int64)
    np.add.at(commit_daily, stream_commit[covered], stream_daily[covered])
    row_commit = stream_commit[line]
    cov = row_commit >= 0
    used = np.zeros(ncommit * ndays, dtype=np.int64)
    np.add.at(used, row_commit[cov] * ndays + day[cov], eff_units[cov])
    unused_all = np.repeat(commit_daily, ndays) - used
    u_idx = np.flatnonzero(unused_all > 0)
    u_commit, u_day = u_idx // ndays, (u_idx % ndays).astype(np.int32)
    unused = unused_all[u_idx]
    # The monthly payment on the first day of every month (and on the first day of the window).
    pay_days = np.array(sorted({0} | {i for i, d in enumerate(cal.dates) if d.day == 1}), dtype=np.int32)
    p_commit = np.repeat(np.arange(ncommit), len(pay_days))
    p_day = np.tile(pay_days, ncommit)
    p_units = commit_daily[p_commit] * cal.days_in_month[p_day].astype(np.int64)
    if len(p_units) and p_units.max() >= _MAX_UNITS:
        raise ValueError("a synthetic commitment exceeds 9.2 million per month; lower target_rows")

    # --- all rows: usage streams, unused-commitment lines, purchase lines ---
    nu, npay = len(u_day), len(p_day)
    all_line = np.concatenate([line, nstreams + u_commit, nstreams + ncommit + p_commit]).astype(np.int32)
    all_day = np.concatenate([day, u_day, p_day]).astype(np.int64)
    zero_u, zero_p = np.zeros(nu, dtype=np.int64), np.zeros(npay, dtype=np.int64)
    # Catalog prices are the contract's: usage at them is ContractedCost, and list (pay-as-you-go) is above
    # them by the category's negotiated discount. Commitments discount the contracted price further.
    discount = np.array([NEGOTIATED_DISCOUNT.get(s.category, 0.0) for s in SERVICES])[r_svc[st_res]]
    full_list_units = _units(list_float / (1 - discount[line]), _COST_DECIMALS)
    money = {
        "BilledCost": np.concatenate([billed_units, zero_u, p_units]),
        "EffectiveCost": np.concatenate([eff_units, unused, zero_p]),
        "ListCost": np.concatenate([full_list_units, zero_u, p_units]),
        "ContractedCost": np.concatenate([list_units, zero_u, p_units]),
    }
    # Unused commitment: the quantity is the unused share of the day's commitment.
    u_share = unused / np.maximum(commit_daily[u_commit], 1)
    quantity = np.concatenate(
        [_units(qty, _QTY_DECIMALS), _units(u_share, _QTY_DECIMALS), np.full(npay, _UNITS, dtype=np.int64)]
    )
    price_units = _units(streams.price, _COST_DECIMALS)
    list_price_units = _units(streams.price / (1 - discount), _COST_DECIMALS)
    unit_price = {
        "ContractedUnitPrice": np.concatenate([price_units[line], zero_u, p_units]),
        "ListUnitPrice": np.concatenate([list_price_units[line], zero_u, p_units]),
    }

    ctx = _Context(
        rng=rng,
        subs=subs,
        rg_names=rg_names,
        st_res=st_res,
        st_meter=st_meter,
        r_svc=r_svc,
        r_rg=r_rg,
        r_sub=r_sub,
        r_region=r_region,
        r_tags=r_tags,
        rg_workload=rg_workload,
        model=model,
        stream_commit=stream_commit,
        commit_keys=commit_keys,
    )
    columns = ctx.line_columns(currency, billing_account_id, billing_account_name)
    table = _build_table(columns, all_line, all_day, cal, money, quantity, unit_price)
    table = _with_idle_resources(table, subs, cal, currency, billing_account_id, billing_account_name)
    label_table = ctx.labels(injected, cal)
    log.info(
        "synthetic estate: %d rows, %d resources, %d commitments, %d anomalies (seed %d, %s..%s)",
        table.num_rows,
        nres,
        ncommit,
        label_table.num_rows,
        seed,
        cal.start,
        cal.end,
    )
    return Estate(
        costs=table,
        labels=label_table,
        seed=seed,
        start=cal.start,
        end=cal.end,
        currency=currency,
        billing_account_id=billing_account_id,
        billing_account_name=billing_account_name,
        subscriptions=subs,
    )


_TEAMS = sorted({w[2] for w in WORKLOADS})


class _Calendar:
    """Day-indexed lookups for the window [start, end)."""

    def __init__(self, start: date, end: date) -> None:
        self.start, self.end = start, end
        self.ndays = (end - start).days
        self.dates = [start + timedelta(days=i) for i in range(self.ndays)]
        epoch = date(1970, 1, 1)
        self.epoch_day = np.array([(d - epoch).days for d in self.dates], dtype=np.int64)
        self.weekday = np.array([d.weekday() for d in self.dates], dtype=np.int8)
        self.days_in_month = np.array([calendar.monthrange(d.year, d.month)[1] for d in self.dates], dtype=np.int64)
        self.month_start = np.array([(d.replace(day=1) - epoch).days for d in self.dates], dtype=np.int64)
        self.month_end = np.array([(_add_months(d.replace(day=1), 1) - epoch).days for d in self.dates])


@dataclass
class _TagPlan:
    """Per resource and canonical tag key: which spelling of the key is used (-1 = missing) and of the value."""

    key_form: dict[str, np.ndarray]
    value_form: np.ndarray  # spelling of the env value
    pick: np.ndarray  # random picks for cost center and owner
    empty_form: np.ndarray  # for untagged resources: 0 -> null Tags, 1 -> "{}"

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int) -> _TagPlan:
        untagged = rng.random(n) < 0.08
        key_form = {}
        for key, (forms, missing) in _TAG_KEYS.items():
            p = np.array([w for _, w in forms])
            choice = rng.choice(len(forms), size=n, p=p / p.sum())
            key_form[key] = np.where(untagged | (rng.random(n) < missing), -1, choice)
        return cls(key_form, rng.integers(0, 4, n), rng.integers(0, 1000, n), rng.integers(0, 2, n))

    def cut(self, n: int) -> _TagPlan:
        return _TagPlan(
            {k: v[:n] for k, v in self.key_form.items()}, self.value_form[:n], self.pick[:n], self.empty_form[:n]
        )

    def extend(self, rows: np.ndarray) -> _TagPlan:
        return _TagPlan(
            {k: np.concatenate([v, v[rows]]) for k, v in self.key_form.items()},
            np.concatenate([self.value_form, self.value_form[rows]]),
            np.concatenate([self.pick, self.pick[rows]]),
            np.concatenate([self.empty_form, self.empty_form[rows]]),
        )

    def has(self, key: str) -> np.ndarray:
        return self.key_form[key] >= 0

    def render(self, i: int, *, env: str, workload: tuple[str, str, str]) -> str | None:
        tags: dict[str, str] = {}
        for key, (forms, _) in _TAG_KEYS.items():
            form = int(self.key_form[key][i])
            if form < 0:
                continue
            spellings = _ENV_SPELLINGS[env]
            value = {
                "env": spellings[int(self.value_form[i]) % len(spellings)],
                "team": workload[2],
                "costcenter": COST_CENTERS[int(self.pick[i]) % len(COST_CENTERS)],
                "app": workload[1],
                "owner": OWNERS[int(self.pick[i]) // 7 % len(OWNERS)],
            }[key]
            tags[forms[form][0]] = value
        if not tags:
            return None if self.empty_form[i] == 0 else "{}"
        return json.dumps(tags, separators=(",", ":"))


_METER_FLAT = [(s, m) for s in range(len(SERVICES)) for m in range(len(SERVICES[s].meters))]
_METER_LOOKUP = np.full((len(SERVICES), max(len(s.meters) for s in SERVICES)), -1, dtype=np.int64)
for _i, (_s, _m) in enumerate(_METER_FLAT):
    _METER_LOOKUP[_s, _m] = _i
_METERS = [SERVICES[s].meters[m] for s, m in _METER_FLAT]
_METER_PRICE = np.array([x.price for x in _METERS])
_METER_STEADY = np.array([x.steady for x in _METERS])
_METER_UNIT = np.array([x.unit for x in _METERS])
_METER_DAILY = np.array([x.daily_cost for x in _METERS])

# A creation or deletion may move its service's or resource group's daily total by this share at most.
# Detectors are judged at 15%; the margin covers what this plain-day estimate leaves out (growth
# since day 0, weekend dips, spot and reservation prices, noise).
CHURN_LIMIT = 0.08


def _tame_churn(take, r_svc, r_rg, r_created, r_deleted, r_size, nrg, ndays) -> bool:
    """Shrink (or, for whole units, keep for the whole window) resources whose creation or deletion
    would be a step above CHURN_LIMIT in their service's or resource group's daily total.

    Works in place on the first len(take) resources; returns whether a resource was pinned (rows changed).
    Uses no randomness, so the same seed still gives the same estate."""
    nres = len(take)
    st_res, st_meter = np.nonzero(take)
    pinned_any = False
    for attempt in range(6):
        created, deleted = r_created[:nres], r_deleted[:nres]
        *_, daily = _Streams.base(r_svc[st_res], st_meter, r_size[st_res])
        cost = np.bincount(st_res, weights=daily, minlength=nres)
        rel = np.zeros(nres)
        for codes, ncodes in ((r_svc, len(SERVICES)), (r_rg, nrg)):
            # Level of each series per day, and the gross step (created + deleted cost) per series and day.
            diff = np.zeros((ncodes, ndays + 1))
            np.add.at(diff, (codes, created), cost)
            np.add.at(diff, (codes, deleted), -cost)
            level = np.cumsum(diff, axis=1)
            step = np.zeros((ncodes, ndays + 1))
            np.add.at(step, (codes, created), np.where(created > 0, cost, 0.0))
            np.add.at(step, (codes, deleted), np.where(deleted < ndays, cost, 0.0))
            rel_step = step[:, 1:] / np.maximum(level[:, :-1], 1e-9)  # against the day before the step
            on_create = np.where(created > 0, rel_step[codes, np.maximum(created - 1, 0)], 0.0)
            on_delete = np.where(deleted < ndays, rel_step[codes, np.minimum(deleted, ndays) - 1], 0.0)
            rel = np.maximum(rel, np.maximum(on_create, on_delete))
        bad = rel > CHURN_LIMIT
        if not bad.any():
            break
        shrink = 0.6 * CHURN_LIMIT / np.maximum(rel, 1e-12)
        # Shrinking works for metered usage; whole units (one firewall, one VM) cannot get smaller,
        # and a step from (almost) nothing cannot be made small: those resources stay all along.
        pin = bad & ((shrink < 0.1) | (attempt >= 3))
        r_size[:nres][bad & ~pin] *= shrink[bad & ~pin]
        r_created[:nres][pin] = 0
        r_deleted[:nres][pin] = ndays
        pinned_any |= bool(pin.any())
    return pinned_any


@dataclass
class _Streams:
    """Per (resource, meter) usage streams: active window, price and quantity model."""

    start: np.ndarray
    end: np.ndarray
    price: np.ndarray
    base_qty: np.ndarray
    growth: np.ndarray
    noise: np.ndarray
    weekend: np.ndarray
    steady: np.ndarray
    monthly: np.ndarray  # "1/Month" meters accrue 1/days-in-month of their count per day
    model: np.ndarray

    @staticmethod
    def base(svc: np.ndarray, st_meter: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per stream: list price, steady, monthly, base quantity and the list cost of a plain day (no rng)."""
        fm = _METER_LOOKUP[svc, st_meter]
        price = _METER_PRICE[fm]
        steady = _METER_STEADY[fm]
        unit = _METER_UNIT[fm]
        monthly = steady & (unit == "1/Month")
        base_qty = _METER_DAILY[fm] * size / price
        # Fixed-size things come in whole units: hours of N instances, N disks a month.
        base_qty = np.where(steady & (unit == "1 Hour"), 24 * np.maximum(1, np.rint(base_qty / 24)), base_qty)
        base_qty = np.where(monthly, np.maximum(1, np.rint(base_qty * 30)), base_qty)
        base_qty = np.where(steady & (unit == "1/Day"), np.maximum(1, np.rint(base_qty)), base_qty)
        daily_cost = np.where(monthly, base_qty / 30.44, base_qty) * price
        return price, steady, monthly, base_qty, daily_cost

    @classmethod
    def build(cls, rng, st_res, st_meter, r_svc, r_created, r_deleted, r_size) -> _Streams:
        svc = r_svc[st_res]
        price, steady, monthly, base_qty, _ = cls.base(svc, st_meter, r_size[st_res])
        n = len(st_res)
        svc_noise = np.array([s.noise for s in SERVICES])[svc]
        svc_weekend = np.array([s.weekend for s in SERVICES])[svc]
        return cls(
            start=r_created[st_res].astype(np.int64),
            end=r_deleted[st_res].astype(np.int64),
            price=price,
            base_qty=base_qty,
            growth=np.where(steady, 0.0, rng.normal(0.015, 0.015, n)),
            noise=np.where(steady, 0.0, svc_noise),
            weekend=np.where(steady, 1.0, svc_weekend),
            steady=steady,
            monthly=monthly,
            model=np.zeros(n, dtype=np.int8),
        )

    def quantity(self, rng: np.random.Generator, line: np.ndarray, day: np.ndarray, cal: _Calendar) -> np.ndarray:
        """base * (1 + growth)^(day / 30.44), times the weekend factor on weekends, times log-normal noise,
        spread over the month's days for monthly meters. Written in place (the same floating-point
        operations in the same order, so the same bits as the plain expression, with far fewer
        temporaries of millions of rows)."""
        factor = day / 30.44
        np.power((1.0 + self.growth)[line], factor, out=factor)
        qty = self.base_qty[line]
        qty *= factor
        weekend = np.flatnonzero(cal.weekday[day] >= 5)
        qty[weekend] *= self.weekend[line[weekend]]
        noise = self.noise[line]
        noise *= rng.standard_normal(len(line))
        np.exp(noise, out=noise)
        qty *= noise
        monthly = np.flatnonzero(self.monthly[line])
        qty[monthly] /= cal.days_in_month[day[monthly]]
        return qty

    def add_new(self, new: list[_Anomaly]) -> None:
        k = len(new)
        meters = [SERVICES[a.svc].meters[0] for a in new]
        self.start = np.concatenate([self.start, [a.start for a in new]])
        self.end = np.concatenate([self.end, [a.end + 1 for a in new]])
        self.price = np.concatenate([self.price, [x.price for x in meters]])
        self.base_qty = np.concatenate([self.base_qty, [a.size / x.price for a, x in zip(new, meters, strict=True)]])
        self.growth = np.concatenate([self.growth, np.zeros(k)])
        self.noise = np.concatenate([self.noise, np.full(k, 0.03)])
        self.weekend = np.concatenate([self.weekend, np.ones(k)])
        self.steady = np.concatenate([self.steady, np.zeros(k, dtype=bool)])
        self.monthly = np.concatenate([self.monthly, np.zeros(k, dtype=bool)])
        self.model = np.concatenate([self.model, np.zeros(k, dtype=np.int8)])


@dataclass
class _Anomaly:
    id: int
    kind: str
    level: str
    start: int
    end: int  # inclusive day index
    size: float
    baseline: float
    rel_service: float
    rel_rg: float
    stream: int
    svc: int
    rg: int
    sub: int
    team: int


def _daily(codes: np.ndarray, ncodes: int, day: np.ndarray, ndays: int, cost: np.ndarray) -> np.ndarray:
    flat = codes.astype(np.int64) * ndays + day
    return np.bincount(flat, weights=cost, minlength=ncodes * ndays).reshape(ncodes, ndays)


def _inject_anomalies(
    rng, *, count, streams, line, day, qty, dims, ndays, idle=None
) -> tuple[list[_Anomaly], list[_Anomaly]]:
    """Pick anomaly targets, size them against the series they land in, and add them to `qty` in place.

    `idle` is (subscription index, {service index: daily cost}) of the idle resources added after
    generation (_with_idle_resources): the labels' baselines count them like the rows will.
    Returns every anomaly, and those of kind new_cost separately (the caller adds their resources)."""
    first_start, last_start = MIN_HISTORY_DAYS, ndays - 10
    if count <= 0:
        return [], []
    if last_start <= first_start:
        log.warning("a %d-day estate is too short for anomalies (needs > %d days); none injected", ndays, 70)
        return [], []
    s_svc, s_rg, s_sub, s_team = dims
    factor = np.choose(streams.model, [1.0, RESERVATION_FACTOR, SAVINGS_PLAN_FACTOR, SPOT_FACTOR])
    cost = qty * (streams.price * factor)[line]
    by_svc = _daily(s_svc[line], len(SERVICES), day, ndays, cost)
    by_rg = _daily(s_rg[line], int(s_rg.max()) + 1, day, ndays, cost)
    by_sub = _daily(s_sub[line], int(s_sub.max()) + 1, day, ndays, cost)
    tagged = s_team[line] >= 0
    by_team = _daily(s_team[line][tagged], len(_TEAMS), day[tagged], ndays, cost[tagged])
    # Unused commitment (a covered VM deleted before the end) stays in its subscription's and, for
    # reservations, in Virtual Machines' EffectiveCost: baselines must count it like the rows will.
    covered = np.flatnonzero(((streams.model == RESERVATION) | (streams.model == SAVINGS_PLAN)) & (streams.end < ndays))
    for k in covered:
        unused = streams.base_qty[k] * streams.price[k] * factor[k]
        by_sub[s_sub[k], streams.end[k] :] += unused
        if streams.model[k] == RESERVATION:
            by_svc[s_svc[k], streams.end[k] :] += unused
    # The idle resources' few dollars a day go into the labels' recorded baselines (what the rows will
    # show), not into choosing and sizing anomalies: the seed keeps drawing the same anomalies as before.
    idle_svc, idle_sub = np.zeros_like(by_svc), np.zeros_like(by_sub)
    if idle is not None:
        idle_sub_index, idle_by_service = idle
        for svc_index, daily in idle_by_service.items():
            idle_svc[svc_index] += daily
            if idle_sub_index < by_sub.shape[0]:
                idle_sub[idle_sub_index] += daily
    lengths = np.maximum(streams.end - streams.start, 0)
    row_offset = np.cumsum(lengths) - lengths

    out: list[_Anomaly] = []
    used_svc: list[int] = []
    used_rg: list[int] = []
    used_team: list[int] = []
    eligible = (streams.model == ON_DEMAND) & (streams.base_qty > 0)
    meter0_price = np.array([svc.meters[0].price for svc in SERVICES])
    starts = np.sort(rng.integers(first_start, last_start, size=count))
    for i in range(count):
        kind = ANOMALY_KINDS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        level = ANOMALY_LEVELS[int(rng.choice(4, p=[0.35, 0.35, 0.15, 0.15]))]
        a_start = int(starts[i])
        a_end = a_start + int(rng.integers(0, 5)) if kind == "spike" else ndays - 1
        active = eligible & (streams.start <= a_start - BASELINE_DAYS) & (streams.end > a_end)
        if level == "tag":
            active &= (s_team >= 0) & ~np.isin(s_team, used_team)
        window = slice(a_start - BASELINE_DAYS, a_start)
        lo, hi = {"spike": (0.5, 1.0), "level_shift": (0.4, 0.7), "new_cost": (0.4, 0.8)}[kind]
        # The largest size each stream could be asked to carry, against what fits in one row a day.
        level_mean = {"service": by_svc, "resource_group": by_rg, "subscription": by_sub, "tag": by_team}[level]
        level_codes = {"service": s_svc, "resource_group": s_rg, "subscription": s_sub, "tag": np.maximum(s_team, 0)}
        biggest = np.maximum.reduce(
            [
                by_svc[:, window].mean(axis=1)[s_svc],
                by_rg[:, window].mean(axis=1)[s_rg],
                level_mean[:, window].mean(axis=1)[level_codes[level]],
            ]
        )
        carrier_price = meter0_price[s_svc] if kind == "new_cost" else streams.price
        active &= (hi * biggest <= MAX_ANOMALY_QTY * carrier_price) & (hi * biggest <= MAX_ANOMALY_COST)
        cand = np.array([], dtype=np.int64)
        # Prefer a service and a resource group no other anomaly touched, so labels never overlap.
        for strict in (2, 1, 0):
            mask = active
            if strict >= 1:
                mask = mask & ~np.isin(s_rg, used_rg)
            if strict >= 2:
                mask = mask & ~np.isin(s_svc, used_svc)
            cand = np.flatnonzero(mask)
            if len(cand):
                break
        if not len(cand):
            log.warning("no stream can carry anomaly %d (%s at %s level); skipped", i, kind, level)
            continue
        # Among the candidates, prefer streams whose service and resource group have similar daily
        # totals, so the anomaly is of a plausible size in both series, not 50x a tiny service.
        b_svc = by_svc[s_svc[cand], window].mean(axis=1)
        b_rg = by_rg[s_rg[cand], window].mean(axis=1)
        balance = np.minimum(b_svc, b_rg) / np.maximum(np.maximum(b_svc, b_rg), 1e-9)
        # Subscription and tag anomalies are sized on a big series: carry them on a big service and group.
        score = np.minimum(b_svc, b_rg) if level in ("subscription", "tag") else balance
        best = cand[score >= np.quantile(score, 0.75)]
        k = int(rng.choice(best))
        svc, rg, sub, team = int(s_svc[k]), int(s_rg[k]), int(s_sub[k]), int(s_team[k])
        base_svc = float(by_svc[svc, window].mean())
        base_rg = float(by_rg[rg, window].mean())
        level_base = {
            "service": base_svc,
            "resource_group": base_rg,
            "subscription": float(by_sub[sub, window].mean()),
            "tag": float(by_team[max(team, 0), window].mean()),
        }[level]
        size = float(rng.uniform(lo, hi)) * max(base_svc, base_rg, level_base)
        level_idle = {
            "service": float(idle_svc[svc, window].mean()),
            "subscription": float(idle_sub[sub, window].mean()),
        }
        a = _Anomaly(
            id=i,
            kind=kind,
            level=level,
            start=a_start,
            end=a_end,
            size=size,
            baseline=level_base + level_idle.get(level, 0.0),
            rel_service=size / base_svc if base_svc else float("inf"),
            rel_rg=size / base_rg if base_rg else float("inf"),
            stream=k,
            svc=svc,
            rg=rg,
            sub=sub,
            team=team,
        )
        if kind != "new_cost":
            rows = row_offset[k] + (np.arange(a_start, a_end + 1) - streams.start[k])
            qty[rows] += size / streams.price[k]
        # Later anomalies are sized against the series as they will be, this one included: an earlier
        # level shift in the same subscription would otherwise make them look smaller than labelled.
        days = slice(a_start, a_end + 1)
        by_svc[svc, days] += size
        by_rg[rg, days] += size
        by_sub[sub, days] += size
        if team >= 0:
            by_team[team, days] += size
        used_svc.append(svc)
        used_rg.append(rg)
        if team >= 0:
            used_team.append(team)
        out.append(a)
    return out, [a for a in out if a.kind == "new_cost"]


@dataclass
class _Context:
    """Everything needed to render per-line string attributes (a line = a usage stream or a commitment line)."""

    rng: np.random.Generator
    subs: tuple[Subscription, ...]
    rg_names: list[str]
    st_res: np.ndarray
    st_meter: np.ndarray
    r_svc: np.ndarray
    r_rg: np.ndarray
    r_sub: np.ndarray
    r_region: np.ndarray
    r_tags: _TagPlan
    rg_workload: np.ndarray
    model: np.ndarray
    stream_commit: np.ndarray
    commit_keys: np.ndarray
    resource_ids: list[str] = field(default_factory=list)
    resource_names: list[str] = field(default_factory=list)

    def _resources(self) -> None:
        counters: dict[tuple[int, int], int] = {}
        for i in range(len(self.r_svc)):
            svc = SERVICES[int(self.r_svc[i])]
            rg = int(self.r_rg[i])
            workload = WORKLOADS[int(self.rg_workload[rg])]
            nth = counters[(rg, int(self.r_svc[i]))] = counters.get((rg, int(self.r_svc[i])), 0) + 1
            name = f"{svc.name_prefix}-{workload[1]}-{self.subs[int(self.r_sub[i])].environment}-{nth:03d}"
            provider, _, kind = svc.arm_type.partition("/")
            self.resource_names.append(name)
            self.resource_ids.append(
                f"/subscriptions/{self.subs[int(self.r_sub[i])].id}/resourcegroups/{self.rg_names[rg]}"
                f"/providers/{provider}/{kind}/{name}"
            )

    def line_columns(self, currency: str, account_id: str, account_name: str) -> dict[str, tuple[np.ndarray, list]]:
        """Per-line codes and dictionaries for every string column of FOCUS_SCHEMA."""
        self._resources()
        ns, nc, nres = len(self.st_res), len(self.commit_keys), len(self.r_svc)
        nlines = ns + 2 * nc
        res = self.st_res
        svc = self.r_svc[res]
        c_sub = (self.commit_keys // 1000).astype(np.int64)
        c_is_ri = self.commit_keys % 10 == 1
        c_meter = (self.commit_keys % 1000) // 10
        commit_ids, commit_names, reservation_ids = [], [], []
        for k in range(nc):
            sub = self.subs[int(c_sub[k])]
            order, benefit = _guid(self.rng), _guid(self.rng)
            if c_is_ri[k]:
                meter = SERVICES[0].meters[int(c_meter[k])]
                commit_ids.append(f"/providers/microsoft.capacity/reservationorders/{order}/reservations/{benefit}")
                commit_names.append(f"VM_RI_{meter.name.replace(' ', '_')}_{sub.name}")
                reservation_ids.append(benefit)
            else:
                commit_ids.append(
                    f"/providers/microsoft.billingbenefits/savingsplanorders/{order}/savingsplans/{benefit}"
                )
                commit_names.append(f"Compute_SavingsPlan_{sub.name}")
                reservation_ids.append(None)

        def by_code(stream_codes, commit_codes, purchase_codes, dictionary) -> tuple[np.ndarray, list[str]]:
            codes = np.concatenate([stream_codes, commit_codes, purchase_codes]).astype(np.int32)
            if not dictionary:
                # Small estates often hold no commitment at all: the column is all null, and there
                # is no code to remap (indexing the empty remap below would raise).
                if (codes >= 0).any():
                    raise AssertionError("codes into an empty dictionary; this is a bug")
                return np.full(len(codes), -1, dtype=np.int32), []
            # Dictionaries must hold distinct values (pandas categoricals, Parquet dictionary pages).
            unique, remap = np.unique(np.array(dictionary, dtype=object).astype(str), return_inverse=True)
            return np.where(codes >= 0, remap[np.maximum(codes, 0)], -1).astype(np.int32), unique.tolist()

        const = {
            name: (np.zeros(nlines, dtype=np.int32), [value])
            for name, value in (
                ("BillingAccountId", account_id),
                ("BillingAccountName", account_name),
                ("BillingAccountType", "Billing Account"),
                ("SubAccountType", "Subscription"),
                ("BillingCurrency", currency),
                ("InvoiceIssuerName", "Microsoft"),
                ("ProviderName", "Microsoft"),
                ("PublisherName", "Microsoft"),
            )
        }
        cols: dict[str, tuple[np.ndarray, list]] = dict(const)
        none = np.full(nlines, -1, dtype=np.int32)
        cols["ChargeClass"] = (none, [])
        sub_s = self.r_sub[res]
        cols["SubAccountId"] = by_code(sub_s, c_sub, c_sub, [s.sub_account_id for s in self.subs])
        cols["SubAccountName"] = by_code(sub_s, c_sub, c_sub, [s.name for s in self.subs])
        cols["ResourceId"] = by_code(res, nres + np.arange(nc), nres + np.arange(nc), self.resource_ids + commit_ids)
        cols["ResourceName"] = by_code(
            res, nres + np.arange(nc), nres + np.arange(nc), self.resource_names + commit_names
        )
        nsvc = len(SERVICES)
        c_type = np.where(c_is_ri, nsvc, nsvc + 1)
        cols["ResourceType"] = by_code(
            svc, c_type, c_type, [s.resource_type for s in SERVICES] + ["Reservation", "Savings plan"]
        )
        cols["x_ResourceType"] = by_code(
            svc,
            c_type,
            c_type,
            [s.arm_type for s in SERVICES]
            + ["microsoft.capacity/reservationorders", "microsoft.billingbenefits/savingsplanorders"],
        )
        region = self.r_region[res]
        c_none = np.full(nc, -1)
        cols["RegionId"] = by_code(region, c_none, c_none, [r[0] for r in REGIONS])
        cols["RegionName"] = by_code(region, c_none, c_none, [r[1] for r in REGIONS])
        c_svc = np.where(c_is_ri, 0, nsvc)
        cols["ServiceName"] = by_code(
            svc, c_svc, c_svc, [s.name for s in SERVICES] + ["Azure Savings Plan for Compute"]
        )
        cols["ServiceCategory"] = by_code(svc, c_svc, c_svc, [s.category for s in SERVICES] + ["Compute"])
        zeros_s, zeros_c, ones_c = np.zeros(ns), np.zeros(nc), np.ones(nc)
        cols["ChargeCategory"] = by_code(zeros_s, zeros_c, ones_c, ["Usage", "Purchase"])
        cols["ChargeFrequency"] = by_code(zeros_s, zeros_c, ones_c, ["Usage-Based", "Recurring"])
        cols["PricingCategory"] = by_code(self.model, ones_c, ones_c, list(PRICING_CATEGORY))
        c_model = np.where(c_is_ri, RESERVATION, SAVINGS_PLAN)
        cols["x_PricingModel"] = by_code(self.model, c_model, c_model, list(PRICING_MODELS))

        # Meters: the price list's meters, then synthetic meters for unused and purchased commitments.
        flat = [(s, m) for s in range(nsvc) for m in range(len(SERVICES[s].meters))]
        flat_index = {sm: i for i, sm in enumerate(flat)}
        fm = np.array([flat_index[(int(s), int(m))] for s, m in zip(svc, self.st_meter, strict=True)], dtype=np.int64)
        nf = len(flat)
        extra_meters = [
            ("Reservation", "Unused Reservation", "Unused reservation", "1 Hour"),
            ("Savings Plan", "Unused Savings Plan", "Unused savings plan", "1 Hour"),
            ("Reservation", "Reservation Purchase", "Reservation purchase, monthly payment", "1/Month"),
            ("Savings Plan", "Savings Plan Purchase", "Savings plan purchase, monthly payment", "1/Month"),
        ]
        u_m = np.where(c_is_ri, nf, nf + 1)
        p_m = np.where(c_is_ri, nf + 2, nf + 3)
        metas = [(SERVICES[s], SERVICES[s].meters[m]) for s, m in flat]
        cols["x_MeterCategory"] = by_code(
            fm, u_m, p_m, [s.meter_category for s, _ in metas] + [x[0] for x in extra_meters]
        )
        cols["x_MeterSubCategory"] = by_code(
            fm, u_m, p_m, [x.sub_category for _, x in metas] + [x[0] for x in extra_meters]
        )
        cols["x_MeterName"] = by_code(fm, u_m, p_m, [x.name for _, x in metas] + [x[1] for x in extra_meters])
        cols["ChargeDescription"] = by_code(
            fm, u_m, p_m, [f"{x.name} - {x.sub_category}" for _, x in metas] + [x[2] for x in extra_meters]
        )
        cols["PricingUnit"] = by_code(fm, u_m, p_m, [x.unit for _, x in metas] + [x[3] for x in extra_meters])
        cols["ConsumedUnit"] = cols["PricingUnit"]
        meter_ids = [
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"costlake-meter:{s.meter_category}/{x.sub_category}/{x.name}"))
            for s, x in metas
        ] + [str(uuid.uuid5(uuid.NAMESPACE_URL, f"costlake-meter:{x[0]}/{x[1]}")) for x in extra_meters]
        cols["x_MeterId"] = by_code(fm, u_m, p_m, meter_ids)

        # Commitment columns: covered usage and unused lines name their commitment; purchases too.
        sc = self.stream_commit
        ci = np.arange(nc)
        cols["CommitmentDiscountId"] = by_code(sc, ci, ci, commit_ids)
        cols["CommitmentDiscountName"] = by_code(sc, ci, ci, commit_names)
        # Gather only for covered streams: with no commitment at all, c_is_ri is empty.
        s_ri = np.full(ns, -1, dtype=np.int64)
        s_ri[sc >= 0] = np.where(c_is_ri[sc[sc >= 0]], 0, 1)
        c_ri = np.where(c_is_ri, 0, 1)
        cols["CommitmentDiscountType"] = by_code(s_ri, c_ri, c_ri, ["Reservation", "Savings Plan"])
        cols["CommitmentDiscountCategory"] = by_code(s_ri, c_ri, c_ri, ["Usage", "Spend"])
        cols["CommitmentDiscountStatus"] = by_code(np.where(sc >= 0, 0, -1), ones_c, c_none, ["Used", "Unused"])
        s_res_id = np.where((sc >= 0) & (s_ri == 0), sc, -1)
        c_res_id = np.where(c_is_ri, ci, -1)
        cols["x_ReservationId"] = by_code(s_res_id, c_res_id, c_res_id, [r or "" for r in reservation_ids])

        # Tags and resource groups belong to resources; commitment lines have neither.
        tags = [
            self.r_tags.render(
                i,
                env=self.subs[int(self.r_sub[i])].environment,
                workload=WORKLOADS[int(self.rg_workload[int(self.r_rg[i])])],
            )
            for i in range(nres)
        ]
        tag_codes, tag_dict = _codes(tags)
        cols["Tags"] = by_code(tag_codes[res], c_none, c_none, tag_dict)
        cols["x_ResourceGroupName"] = by_code(self.r_rg[res], c_none, c_none, self.rg_names)
        return cols

    def labels(self, injected: list[_Anomaly], cal: _Calendar) -> pa.Table:
        rows = []
        for a in injected:
            res = int(self.st_res[a.stream])
            sub = self.subs[a.sub]
            value = {
                "service": SERVICES[a.svc].name,
                "resource_group": self.rg_names[a.rg],
                "subscription": sub.sub_account_id,
                "tag": _TEAMS[a.team] if a.team >= 0 else "",
            }[a.level]
            rows.append(
                {
                    "anomaly_id": a.id,
                    "kind": a.kind,
                    "level": a.level,
                    "dimension": LEVEL_DIMENSION[a.level],
                    "value": value,
                    "start_date": cal.dates[a.start],
                    "end_date": cal.dates[a.end],
                    "size_per_day": round(a.size, 4),
                    "baseline_per_day": round(a.baseline, 4),
                    "relative_size": round(a.size / a.baseline, 4) if a.baseline else None,
                    "relative_to_service": round(a.rel_service, 4),
                    "relative_to_resource_group": round(a.rel_rg, 4),
                    "subscription_id": sub.sub_account_id,
                    "subscription_name": sub.name,
                    "resource_group": self.rg_names[a.rg],
                    "service_name": SERVICES[a.svc].name,
                    "resource_id": self.resource_ids[res],
                    "meter_name": SERVICES[a.svc].meters[int(self.st_meter[a.stream])].name,
                }
            )
        return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


def _build_table(columns, all_line, all_day, cal, money, quantity, unit_price) -> pa.Table:
    day_epoch = cal.epoch_day[all_day]
    # Columns that share per-line codes (or amounts) share one Arrow buffer: half the work at 5M rows.
    indices: dict[bytes, pa.Array] = {}
    if len(all_line) and np.any(np.diff(all_line) < 0):
        raise AssertionError("rows must be grouped by line (generation order); this is a bug")
    nlines = max(len(codes) for codes, _ in columns.values())
    rows_per_line = np.bincount(all_line, minlength=nlines)
    decimals: dict[int, pa.Array] = {}

    def decimal(values: np.ndarray) -> pa.Array:
        if id(values) not in decimals:
            decimals[id(values)] = _decimal(values)
        return decimals[id(values)]

    arrays: list[pa.Array] = []
    for f in FOCUS_SCHEMA:
        name = f.name
        if name == "BillingPeriodStart":
            arrays.append(_timestamps(cal.month_start[all_day]))
        elif name == "BillingPeriodEnd":
            arrays.append(_timestamps(cal.month_end[all_day]))
        elif name == "ChargePeriodStart":
            arrays.append(_timestamps(day_epoch))
        elif name == "ChargePeriodEnd":
            arrays.append(_timestamps(day_epoch + 1))
        elif name in money:
            arrays.append(decimal(money[name]))
        elif name in ("PricingQuantity", "ConsumedQuantity"):
            arrays.append(decimal(quantity))
        elif name in unit_price:
            arrays.append(decimal(unit_price[name]))
        else:
            codes, dictionary = columns[name]
            key = np.ascontiguousarray(codes, dtype=np.int32).tobytes()
            if key not in indices:
                indices[key] = _indices(codes, rows_per_line)
            arrays.append(pa.DictionaryArray.from_arrays(indices[key], pa.array(dictionary, type=STRING)))
    schema = pa.schema(
        [pa.field(f.name, pa.dictionary(pa.int32(), STRING)) if f.type == STRING else f for f in FOCUS_SCHEMA]
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def _idle_subscription(subs: tuple[Subscription, ...]) -> Subscription:
    """Where the idle resources live: the first non-production subscription (else the last one)."""
    return next((s for s in subs if s.environment != "prod"), subs[-1])


def _idle_daily_cost(cal: _Calendar) -> dict[int, np.ndarray]:
    """The idle resources' daily cost per service index (floats: anomaly baselines only)."""
    out: dict[int, np.ndarray] = {}
    names = [s.name for s in SERVICES]
    for _name, service, *_rest, price, billed in IDLE_RESOURCES:
        daily = np.full(cal.ndays, price * 24.0) if billed == "hours" else price / cal.days_in_month
        index = names.index(service)
        out[index] = out.get(index, np.zeros(cal.ndays)) + daily
    return out


def _with_idle_resources(
    table: pa.Table,
    subs: tuple[Subscription, ...],
    cal: _Calendar,
    currency: str,
    billing_account_id: str,
    billing_account_name: str,
) -> pa.Table:
    """`table` plus prices.IDLE_RESOURCES, billed every day of the window (steady: no change point, so no
    anomaly; a few dollars a day, far below any service's or resource group's noise). No random draw, so
    the rest of the estate is what the seed made it."""
    sub = _idle_subscription(subs)
    rg = f"{IDLE_RESOURCE_GROUP}-{sub.name.split('-', 1)[-1]}"
    region_id, region_name = REGIONS[1]
    tags = json.dumps({"env": sub.environment, "application": "legacy-erp", "owner": OWNERS[3]}, separators=(",", ":"))
    cost_step, qty_step = Decimal(1).scaleb(-_COST_DECIMALS), Decimal(1).scaleb(-_QTY_DECIMALS)
    rows = []
    for name, service, arm, category, sub_category, meter, unit, price, billed in IDLE_RESOURCES:
        svc = next(s for s in SERVICES if s.name == service)
        contract = Decimal(str(price))
        listed = contract / Decimal(str(1 - NEGOTIATED_DISCOUNT.get(svc.category, 0.0)))
        resource_id = f"{sub.sub_account_id}/resourcegroups/{rg}/providers/{arm}/{name}"
        meter_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"costlake-meter:{category}/{sub_category}/{meter}"))
        for day in cal.dates:
            month_days = calendar.monthrange(day.year, day.month)[1]
            per_day = (Decimal(1) / month_days).quantize(qty_step)
            qty = {"day": per_day, "hours": Decimal(24), "none": Decimal(0)}[billed]
            charged = per_day if billed == "none" else qty  # a fee: a day's share of the month, no usage
            cost = (contract * charged).quantize(cost_step)
            month_start = datetime(day.year, day.month, 1, tzinfo=UTC)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            rows.append(
                {
                    "BillingAccountId": billing_account_id,
                    "BillingAccountName": billing_account_name,
                    "BillingAccountType": "Billing Account",
                    "BillingPeriodStart": month_start,
                    "BillingPeriodEnd": datetime.combine(_add_months(day.replace(day=1), 1), datetime.min.time(), UTC),
                    "ChargePeriodStart": start,
                    "ChargePeriodEnd": start + timedelta(days=1),
                    "SubAccountId": sub.sub_account_id,
                    "SubAccountName": sub.name,
                    "SubAccountType": "Subscription",
                    "ResourceId": resource_id,
                    "ResourceName": name,
                    "ResourceType": svc.resource_type,
                    "RegionId": region_id,
                    "RegionName": region_name,
                    "ServiceName": service,
                    "ServiceCategory": svc.category,
                    "ChargeCategory": "Usage",
                    "ChargeDescription": f"{meter} - {sub_category}",
                    "ChargeFrequency": "Usage-Based",
                    "PricingCategory": "Standard",
                    "PricingQuantity": qty,
                    "PricingUnit": unit,
                    "ConsumedQuantity": qty,
                    "ConsumedUnit": unit,
                    "ListUnitPrice": listed.quantize(cost_step),
                    "ContractedUnitPrice": contract,
                    "BilledCost": cost,
                    "EffectiveCost": cost,
                    "ListCost": (listed * charged).quantize(cost_step),
                    "ContractedCost": cost,
                    "BillingCurrency": currency,
                    "Tags": tags,
                    "InvoiceIssuerName": "Microsoft",
                    "ProviderName": "Microsoft",
                    "PublisherName": "Microsoft",
                    "x_ResourceGroupName": rg,
                    "x_ResourceType": arm,
                    "x_MeterCategory": category,
                    "x_MeterSubCategory": sub_category,
                    "x_MeterName": meter,
                    "x_MeterId": meter_id,
                    "x_PricingModel": "OnDemand",
                }
            )
    extra = pa.Table.from_pylist(rows, schema=FOCUS_SCHEMA).cast(table.schema)
    # One chunk with one dictionary per column, as _build_table makes it (consumers read `.indices`).
    return pa.concat_tables([table, extra]).unify_dictionaries().combine_chunks()


# --- the synthetic estate as a CostSource ---------------------------------------------------------
ENCODE_BLOCK_ROWS = 32_768  # rows the demo source takes and casts at once before cutting them per subscription-day


def _blocks(groups: list[tuple]) -> Iterator[list[tuple]]:
    """Consecutive groups (their row indices last) in blocks of about ENCODE_BLOCK_ROWS rows."""
    block: list[tuple] = []
    rows = 0
    for group in groups:
        block.append(group)
        rows += len(group[-1])
        if rows >= ENCODE_BLOCK_ROWS:
            yield block
            block, rows = [], 0
    if block:
        yield block


class SyntheticSource:
    """Delivers an estate's rows as FOCUS Parquet chunks, one (subscription, day) at a time.

    Chunks are keyed "<SubAccountId>|<YYYY-MM-DD>"; a (subscription, day) too big for one Kafka
    message is cut into several chunks (meta chunk_index / chunk_count). Like the API sources, a day
    is delivered once: the cursor (scope = subscription GUID, metric "FocusCost") remembers it after
    `commit`, and later fetches skip it unless it is listed in `redeliver`. `until` holds back days
    after it, so a demo can let the estate "arrive" day by day. meta window_start / window_end are
    the chunk's charge day (inclusive)."""

    name = "synthetic"
    metric = "FocusCost"

    def __init__(
        self,
        settings: Settings,
        estate: Estate,
        *,
        cursors: CursorStore,
        until: date | None = None,
        redeliver: Iterable[date] = (),
    ) -> None:
        self.settings = settings
        self.estate = estate
        self.cursors = cursors
        self.until = until
        self.redeliver = set(redeliver)
        self._groups: list[tuple[int, int, np.ndarray]] | None = None

    def _grouped(self) -> list[tuple[int, int, np.ndarray]]:
        """(subscription code, day index, row indices) per (subscription, day), in day order."""
        if self._groups is None:
            costs = self.estate.costs
            sub = costs["SubAccountId"].combine_chunks().indices.to_numpy(zero_copy_only=False).astype(np.int64)
            micros = costs["ChargePeriodStart"].combine_chunks().cast(pa.int64()).to_numpy()
            day = micros // _DAY_US - (self.estate.start - date(1970, 1, 1)).days
            nsub = int(sub.max()) + 1 if len(sub) else 1
            code = day * nsub + sub
            order = np.argsort(code, kind="stable")
            uniq, first = np.unique(code[order], return_index=True)
            bounds = [*first.tolist(), len(order)]
            self._groups = [
                (int(c % nsub), int(c // nsub), order[bounds[i] : bounds[i + 1]]) for i, c in enumerate(uniq)
            ]
        return self._groups

    def fetch(self, batch_id: str) -> Iterator[RawChunk]:
        costs = self.estate.costs
        sub_dict = costs["SubAccountId"].combine_chunks().dictionary.to_pylist()
        delivered = self.cursors.delivered(self.name)
        budget = payload_budget(self.settings)
        fetched_at = datetime.now(UTC)
        cursor_rows: list[CursorRow] = []
        chunks = 0
        wanted = []
        for sub_code, day_index, rows in self._grouped():
            day = self.estate.start + timedelta(days=day_index)
            sub_account_id = sub_dict[sub_code]
            scope = sub_account_id.rsplit("/", 1)[-1]
            if self.until is not None and day > self.until:
                continue
            if (scope, self.metric, day) in delivered and day not in self.redeliver:
                continue
            wanted.append((day, sub_account_id, scope, rows))

        def total(values: pa.ChunkedArray) -> Decimal:
            return pc.sum(values).as_py() or Decimal(0)

        def encode(block: list[tuple]) -> list[tuple[pa.Table, list[tuple[pa.Table, bytes, Decimal, Decimal]]]]:
            # One take and one cast for a block of subscription-days, then zero-copy slices: per group, the
            # take and the 50-column cast cost more than its Parquet file (10k rows: 1,500 groups, 2.8 s
            # of 4.6 s single-threaded), and a block of ENCODE_BLOCK_ROWS decoded rows stays small.
            taken = costs.take(pa.array(np.concatenate([rows for *_, rows in block]))).cast(FOCUS_SCHEMA)
            out, offset = [], 0
            for *_, rows in block:
                table = taken.slice(offset, len(rows))
                offset += len(rows)
                # The totals each piece's meta carries, summed here on the pool too (decimal sums, 4.5 s of a
                # 1M-row ingest when the sending thread did them).
                pieces = [
                    (piece, payload, total(piece["BilledCost"]), total(piece["EffectiveCost"]))
                    for piece, payload in parquet_pieces(table, budget=budget)
                ]
                out.append((table, pieces))
            return out

        encoded = (group for block in in_order(encode, _blocks(wanted)) for group in block)
        # Encoding is most of a demo load's ingest (a Parquet file per subscription-day): a few blocks at once.
        for (day, sub_account_id, scope, _), (table, pieces) in zip(wanted, encoded, strict=True):
            billed = sum((piece_total for *_, piece_total, _ in pieces), Decimal(0))
            for index, (piece, payload, piece_billed, piece_effective) in enumerate(pieces):
                meta = {
                    "source": self.name,
                    "subscription_id": scope,
                    "sub_account_id": sub_account_id,
                    "metric": self.metric,
                    "window_start": day.isoformat(),
                    "window_end": day.isoformat(),
                    "row_count": str(piece.num_rows),
                    "chunk_index": str(index),
                    "chunk_count": str(len(pieces)),
                    "fetched_at": fetched_at.isoformat(),
                    "billed_cost_total": str(piece_billed),
                    "effective_cost_total": str(piece_effective),
                    "currency": self.estate.currency,
                    "seed": str(self.estate.seed),
                }
                chunks += 1
                yield RawChunk(
                    source=self.name,
                    format=PayloadFormat.focus,
                    content_type=ContentType.parquet,
                    key=f"{sub_account_id}|{day.isoformat()}",
                    payload=payload,
                    meta=meta,
                )
            cursor_rows.append(
                CursorRow(
                    source=self.name,
                    scope=scope,
                    metric=self.metric,
                    day=day,
                    fetched_at=fetched_at,
                    row_count=table.num_rows,
                    reported_total=billed,
                    currency=self.estate.currency,
                )
            )
        # Staged only when the fetch ran to the end: a half-sent batch never advances the cursor.
        self.cursors.stage(batch_id, self.name, cursor_rows, chunk_count=chunks)
        log.info("synthetic batch %s: %d chunk(s) for %d (subscription, day)", batch_id, chunks, len(cursor_rows))

    def commit(self, batch_id: str) -> None:
        self.cursors.commit(batch_id)
