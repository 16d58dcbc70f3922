"""Cost explorer: group by any dimension or tag key, filter, pick grain and metric; the view lives in the URL."""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd
import streamlit as st

from app import charts, data, explorer_state, fmt, ui
from app.context import get_reader
from backend.mart import queries


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def fx_status(version: str, start: dt.date, end: dt.date, metric: str, filters: tuple) -> queries.FxStatus:
    return queries.fx_status(get_reader(), start=start, end=end, metric=metric, filters=dict(filters))


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def converted_cost_by(
    version: str, group_by: str, start: dt.date, end: dt.date, grain: str, metric: str, filters: tuple, currency: str
) -> pd.DataFrame:
    frame = queries.cost_breakdown(
        get_reader(), start=start, end=end, group_by=group_by, grain=grain, metric=metric,
        filters=dict(filters), converted_to=currency,
    )  # fmt: skip
    frame["period"] = pd.to_datetime(frame["period"])
    return frame


st.title("Cost explorer")
status = ui.status_or_stop()
ui.require_data(status)
ui.data_as_of(status)

# The URL is the source of truth on first load (a shared link); afterwards the widgets are.
if "explorer_loaded" not in st.session_state:
    st.session_state["explorer_loaded"] = True
    view = explorer_state.read_query_params(st.query_params)
    st.session_state["ex_group"] = view.group_by
    st.session_state["ex_grain"] = view.grain
    st.session_state["ex_metric"] = view.metric
    st.session_state["ex_chart"] = view.chart
    start = view.start or max(status.first_date or status.as_of, status.as_of - dt.timedelta(days=89))
    st.session_state["ex_range"] = (start, view.end or status.as_of)
    for name, values in view.filters.items():
        st.session_state[f"ex_f_{name}"] = values

# Start every read this run will make at once (filter lists, tag keys, the view in session state); the calls
# below are then cache hits. A widget that changes the view only makes its own query miss.
filter_dims = ["subscription", "resource_group", "service", "region", "pricing_model", "charge_category"]
state = st.session_state
planned = explorer_state.ExplorerView(
    state["ex_group"], state.get("ex_grain") or "daily", state.get("ex_metric") or "actual",
    filters={n: list(state.get(f"ex_f_{n}") or []) for n in [*filter_dims, state["ex_group"]]
             if n in filter_dims or n.startswith(data.TAG_PREFIX)},
)  # fmt: skip
reads = [(ui.tag_keys, (status.version,))]
reads += [(ui.dimension_values, (status.version, n)) for n in filter_dims]
if state["ex_group"].startswith(data.TAG_PREFIX):
    reads.append((ui.dimension_values, (status.version, state["ex_group"])))
if isinstance(state.get("ex_range"), tuple) and len(state["ex_range"]) == 2:
    reads.append((ui.cost_by, (status.version, planned.group_by, *state["ex_range"], planned.grain, planned.metric,
                               planned.filter_key)))  # fmt: skip
ui.prefetch(*reads)

tags = ui.guard("list tag keys", ui.tag_keys, status.version) or []
groups = list(data.DIMENSIONS) + [f"{data.TAG_PREFIX}{t}" for t in tags]
if st.session_state["ex_group"] not in groups:
    groups.append(st.session_state["ex_group"])


c1, c2, c3, c4, c5 = st.columns([2, 3, 3, 3, 2])  # wide enough for "monthly" and "amortized"
group_by = c1.selectbox("Group by", groups, key="ex_group", format_func=data.title)
date_range = c2.date_input("Dates", key="ex_range", min_value=status.first_date, max_value=status.as_of)
grain = c3.segmented_control("Grain", list(data.GRAINS), key="ex_grain") or "daily"
metric = c4.segmented_control("Cost", list(data.METRICS), key="ex_metric",
                              help="Actual = billed; amortized spreads reservation and savings-plan purchases.") or "actual"  # fmt: skip
chart = c5.segmented_control("Chart", list(explorer_state.CHARTS), key="ex_chart") or "area"

tag_group = group_by.startswith(data.TAG_PREFIX)
filters: dict[str, list[str]] = {}
with st.expander("Filters", expanded=any(st.session_state.get(f"ex_f_{n}") for n in filter_dims)):
    cols = st.columns(3)
    names = filter_dims + ([group_by] if tag_group else [])
    for i, name in enumerate(names):
        options = ui.guard(f"list {name} values", ui.dimension_values, status.version, name) or []
        chosen = st.session_state.get(f"ex_f_{name}") or []
        options = list(dict.fromkeys([*options, *chosen]))
        filters[name] = cols[i % 3].multiselect(data.title(name), options, key=f"ex_f_{name}", placeholder="all")

if not isinstance(date_range, tuple) or len(date_range) != 2:
    st.info("Pick an end date to complete the range.")
    st.stop()
start, end = date_range
view = explorer_state.ExplorerView(group_by, grain, metric, chart, start, end, {k: v for k, v in filters.items() if v})
st.query_params.from_dict(view.to_params())

frame = ui.guard("query costs", ui.cost_by, status.version, group_by, start, end, grain, metric, view.filter_key,
                 fix="Try a shorter date range or fewer filters.")  # fmt: skip
if frame is None:
    st.stop()
if frame.empty:
    st.info("No cost matches this view. Widen the dates or clear some filters.", icon="🔍")
    st.stop()

currencies = sorted(frame["currency"].unique())
fx = ui.guard("read the FX rates", fx_status, status.version, start, end, metric, view.filter_key)
converted = False
if fx is not None and fx.available:
    converted = st.toggle(
        f"Converted to {fx.reporting_currency}", key="ex_converted",
        help="Every currency converted with the imported FX rates (REPORTING_CURRENCY): one series instead of one "
        "per currency. A month without a rate is a gap, never 0.",
    )  # fmt: skip
if converted:
    frame = ui.guard("query converted costs", converted_cost_by, status.version, group_by, start, end, grain, metric,
                     view.filter_key, fx.reporting_currency)  # fmt: skip
    if frame is None:
        st.stop()
    currency = fx.reporting_currency
    rates_of = f" (rates of {fx.latest_rate_date:%Y-%m-%d})" if fx.latest_rate_date else ""
    st.caption(f"Converted to {currency} at month-end rates{rates_of}.")
    if fx.missing:
        listed = ", ".join(f"{cur} {month}" for cur, month in fx.missing)
        st.warning(f"No {currency} rate for: {listed}. Those periods are not converted (gaps, not 0); "
                   "import an FX rates file with them.", icon="💱")  # fmt: skip
elif len(currencies) > 1:
    shown = st.radio("Currency", currencies, horizontal=True, key="ex_currency")
    frame = frame[frame["currency"] == shown]
    currency = shown
else:
    currency = currencies[0]

# A NaN cost is a period and member no report of this metric covers (an actual-only export): said, not 0.
missing = frame["cost"].isna()
total = None if missing.any() else frame["cost"].sum()
if missing.all():
    st.info(fmt.not_available_hint(metric), icon="ℹ️")
    st.stop()
if missing.any():
    st.caption(f"Gaps in the chart: {fmt.not_available_hint(metric)}")
m1, m2, m3 = st.columns(3)
m1.metric("Total", fmt.money(total, currency) if total is not None else f"{metric} cost not available")
m2.metric(f"Members ({data.title(group_by)})", frame["group"].nunique())
m3.metric("Periods", frame["period"].nunique())

st.plotly_chart(charts.stacked(frame, kind=chart, currency=currency), key="explorer_chart")

table = frame.groupby(["group", "period"])["cost"].sum().unstack(fill_value=0)  # pivot_table is ~5x slower
table.columns = [p.strftime("%Y-%m-%d") for p in table.columns]
table.insert(0, "total", table.sum(axis=1))
table = table.sort_values("total", ascending=False).reset_index()
st.dataframe(table, hide_index=True, width="stretch", column_config={"group": data.title(group_by)})

# Downloads carry the exact amounts (numeric as the mart holds them), not the floats the chart uses.
long = frame.assign(period=frame["period"].dt.date, cost=frame["cost_exact"]).drop(columns="cost_exact")
long = long.rename(columns={"group": group_by})
d1, d2, _ = st.columns([1, 1, 4])


def _parquet(frame=long) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


# Files are built when clicked (Streamlit calls these then), not on every rerun of the page.
d1.download_button("Download CSV", lambda frame=long: frame.to_csv(index=False).encode(),
                   file_name="costlake_explorer.csv", mime="text/csv", key="ex_csv")  # fmt: skip
d2.download_button("Download Parquet", _parquet, file_name="costlake_explorer.parquet",
                   mime="application/vnd.apache.parquet", key="ex_parquet")  # fmt: skip
st.caption("The address bar holds this view: copy it to share exactly what you see.")
