"""Gold tables: browse each gold Delta table through delta-rs — schema, row count, versions, filtered preview, download."""

from __future__ import annotations

import io

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import streamlit as st

from app import ui
from app.context import get_lake
from backend.lake import browse as gold

st.title("Gold tables")
ui.data_as_of()
lake = get_lake()
tables = ui.guard("list the gold tables", lake.list_tables, "gold", fix="Check the lake on **Sources & settings**.")
if tables is None:
    st.stop()
if not tables:
    st.info("The lake has no gold tables yet. Run the pipeline (**Pipeline** page) to build them.", icon="🥇")
    st.stop()

st.caption(f"Lake: `{lake.location.display()}` · read with delta-rs")
table = st.selectbox("Table", tables, key="gold_table", format_func=lambda t: t.split("/", 1)[1])
version = ui.guard("read the table version", lake.version, table)
count = ui.guard("count rows", lake.count, table)
c1, c2, c3 = st.columns(3)
c1.metric("Rows", f"{count:,}" if count is not None else "–")
c2.metric("Version", version if version is not None else "–")
part_col, part_values = ui.guard("list partitions", gold.partition_values, lake, table) or (None, [])
c3.metric("Partitions", len(part_values) if part_col else "none")

tab_preview, tab_schema, tab_history = st.tabs(["Preview", "Schema", "Version history"])
with tab_schema:
    schema = ui.guard("read the schema", gold.schema_frame, lake, table)
    if schema is not None:
        st.dataframe(schema, hide_index=True, width="stretch")
with tab_history:
    history = ui.guard("read the history", gold.history_frame, lake, table)
    if history is not None:
        st.dataframe(history, hide_index=True, width="stretch")

with tab_preview:
    columns = list(schema["column"]) if schema is not None else []
    f1, f2, f3, f4 = st.columns([2, 2, 3, 1])
    partition = None
    if part_col and part_values:
        chosen = f1.selectbox(part_col, part_values, key=f"gold_part_{table}")
        partition = (part_col, chosen)
    column = f2.selectbox("Filter column", ["(none)", *columns], key=f"gold_col_{table}")
    contains = f3.text_input("contains", key=f"gold_contains_{table}", placeholder="text to look for")
    as_of_version = f4.number_input("Version", min_value=0, max_value=version or 0, value=version or 0,
                                    key=f"gold_version_{table}", help="Time travel: read an older version")  # fmt: skip
    result = ui.guard(
        "read the table",
        gold.rows,
        lake,
        table,
        partition=partition,
        column=None if column == "(none)" else column,
        contains=contains,
        version=None if as_of_version == version else int(as_of_version),
    )
    if result is not None:
        data, matching = result
        shown = data.slice(0, gold.PREVIEW_ROWS)
        st.caption(
            f"{matching:,} matching rows"
            + (f" in {part_col}={partition[1]}" if partition else "")
            + (f"; showing the first {shown.num_rows:,}" if matching > shown.num_rows else "")
        )
        st.dataframe(shown.to_pandas(), hide_index=True, width="stretch")
        name = table.replace("/", "_") + (f"_{partition[1]}" if partition else "")
        csv_buf, pq_buf = io.BytesIO(), io.BytesIO()
        pacsv.write_csv(data, csv_buf)
        pq.write_table(data, pq_buf)
        d1, d2, _ = st.columns([1, 1, 4])
        d1.download_button("Download CSV", csv_buf.getvalue(), file_name=f"{name}.csv", mime="text/csv", key="gold_csv")
        d2.download_button("Download Parquet", pq_buf.getvalue(), file_name=f"{name}.parquet",
                           mime="application/vnd.apache.parquet", key="gold_parquet")  # fmt: skip
        if matching > data.num_rows:
            st.caption(f"Downloads hold the first {data.num_rows:,} rows; pick a partition or filter for the rest.")
