"""Showback: cost per owner per month under the allocation rules, the unallocated share, tag hygiene and the rules."""

from __future__ import annotations

import calendar
import datetime as dt
import logging

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import auth, fmt, ui
from app.context import get_owner, get_reader
from backend.allocation import report
from backend.allocation.rules import Inherit, RulesError, RuleSet, TagSettings, export_yaml, merge_preview, parse_yaml
from backend.mart import allocation

log = logging.getLogger(__name__)
TOP_OWNERS = 10
EXAMPLE = """version: 1
tags:
  normalise_separators: true
  aliases: {costcenter: cost-center}
rules:
  - id: team-tag
    match: {tag: team}          # the owner is the tag's value
  - id: shared-subscription
    match: {subscription: my-shared-subscription}
    split: {method: proportional}
"""


# --- cached reads (keyed by the mart's data version and when allocation was last computed) -----------------
@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def months(key: str) -> list[dt.date]:
    return allocation.months(get_reader())


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def currencies(key: str) -> list[str]:
    return allocation.currencies(get_reader())


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def by_owner(key: str, start: dt.date, end: dt.date, currency: str, metric: str) -> pd.DataFrame:
    rows = allocation.owner_months(get_reader(), start=start, end=end, currency=currency, metric=metric)
    frame = pd.DataFrame(rows, columns=["month", "owner", "unallocated", "cost", "shared_cost"])
    for name in ("cost", "shared_cost"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def summary(key: str, month: dt.date, currency: str, metric: str) -> allocation.MonthSummary:
    return allocation.month_summary(get_reader(), month=month, currency=currency, metric=metric)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def reasons(key: str, month: dt.date, currency: str, metric: str) -> pd.DataFrame:
    return _numeric(pd.DataFrame(allocation.unallocated_reasons(get_reader(), month=month, currency=currency,
                                                                metric=metric)))  # fmt: skip


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def lines(key: str, owner: str, month: dt.date, currency: str, metric: str) -> list[dict]:
    return allocation.owner_lines(get_reader(), owner=owner, month=month, currency=currency, metric=metric)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def coverage(key: str, currency: str) -> pd.DataFrame:
    frame = pd.DataFrame(allocation.coverage(get_reader(), currency=currency),
                         columns=["month", "tag_key", "total_cost", "untagged_cost", "untagged_share"])  # fmt: skip
    return _numeric(frame)


@st.cache_data(ttl=ui.READ_TTL, show_spinner=False)
def raw_keys(key: str) -> dict[str, int]:
    return allocation.raw_tag_keys(get_reader())


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    for name in frame.columns:
        if frame[name].map(lambda v: v.__class__.__name__ == "Decimal").any():
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def _trend_figure(frame: pd.DataFrame, currency: str) -> go.Figure:
    """Stacked monthly cost of the largest owners, the rest as "other owners", the unallocated share in grey."""
    owned = frame[~frame["unallocated"]]
    top = owned.groupby("owner")["cost"].sum().nlargest(TOP_OWNERS).index
    shown = frame.assign(owner=frame["owner"].where(frame["owner"].isin(top) | frame["unallocated"], "other owners"))
    pivot = shown.pivot_table(index="month", columns="owner", values="cost", aggfunc="sum").fillna(0)
    fig = go.Figure()
    for owner in [*top, "other owners", allocation.UNALLOCATED]:
        if owner in pivot.columns:
            color = "#B0B0B0" if owner == allocation.UNALLOCATED else None
            fig.add_bar(x=pivot.index, y=pivot[owner], name=owner, marker_color=color)
    fig.update_layout(barmode="stack", height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      yaxis={"title": {"text": f"cost ({currency})"}}, legend={"orientation": "h", "y": -0.15})  # fmt: skip
    return fig


def _save(ruleset: RuleSet | str, *, comment: str, what: str) -> None:
    """Save and apply; a refused or invalid save changes nothing and leaves the user's edits where they are."""
    try:
        result = allocation.save_rules(get_owner(), ruleset, actor=principal, comment=comment)
    except RulesError as exc:
        st.error(str(exc), icon="🚫")
        return
    except auth.PermissionDenied as exc:
        auth.refused(exc, target="allocation rules")
        return
    except Exception as exc:
        log.exception("saving the allocation rules failed")
        st.error(f"Could not save the rules ({exc}); nothing was changed. Try again, or check the Pipeline page.")
        return
    share = (
        ""
        if result.unallocated_share is None
        else f"; unallocated now {fmt.pct(result.unallocated_share * 100, signed=False)}"
    )
    st.session_state["showback_flash"] = (
        f"{what}: rules version {result.rules_version} applied to {result.months} months{share}."
    )
    st.cache_data.clear()
    st.rerun()


st.title("Showback")
principal = auth.current_principal()
can_edit = principal.can(auth.Role.editor)
status = ui.status_or_stop()
ui.require_data(status)
if flash := st.session_state.pop("showback_flash", None):
    st.success(flash, icon="✅")

state = ui.guard("read the allocation state", allocation.state, get_reader())
if state is None:
    st.stop()
key = f"{status.version}|{state.computed_at}"
current = ui.guard("read the rules in force", allocation.current_rules, get_reader())
available = ui.guard("list the months", months, key) or []
left, mid, right = st.columns([3, 1, 1])
with left:
    ui.data_as_of(status)
    if state.latest_version is None:
        st.caption("No allocation rules yet: all cost is unallocated. Write rules on the **Rules** tab.")
    else:
        st.caption(f"Rules version {state.latest_version} in force; results computed with version "
                   f"{state.rules_version} at {fmt.when(state.computed_at)}.")  # fmt: skip
with mid:
    money_in = ui.guard("list the currencies", currencies, key) or []
    currency = st.selectbox("Currency", money_in or ["USD"], key="showback_currency")
with right:
    metric = st.radio("Cost", ["amortized", "actual"], horizontal=True, key="showback_metric",
                      help="amortized = FOCUS EffectiveCost (commitments spread over their use); actual = BilledCost")  # fmt: skip

show_tab, hygiene_tab, rules_tab = st.tabs(["Showback", "Tag hygiene", "Rules"])

with show_tab:
    if not available:
        st.info("No allocation computed yet: run the pipeline (its **allocation** step) or save rules.", icon="🪣")
    else:
        # The last whole month by default, as on Waste & savings: the open month is not a month's showback yet.
        newest_end = available[0].replace(day=calendar.monthrange(available[0].year, available[0].month)[1])
        latest_open = status.as_of is not None and status.as_of < newest_end
        month = st.selectbox("Month", available, index=1 if latest_open and len(available) > 1 else 0,
                             format_func=lambda m: m.strftime("%b %Y"), key="showback_month")  # fmt: skip
        s = ui.guard("summarise the month", summary, key, month, currency, metric)
        if s is not None:
            c1, c2, c3, c4 = st.columns(4)
            c1.metric("Total cost", fmt.money(float(s.total or 0), currency), border=True)
            c2.metric("Allocated", fmt.money(float(s.allocated or 0), currency), border=True)
            c3.metric("Unallocated share", "n/a" if s.unallocated_share is None else
                      fmt.pct(s.unallocated_share * 100, signed=False), border=True,
                      delta=fmt.money(float(s.unallocated or 0), currency), delta_color="off",
                      help="Cost no rule gave an owner, or a split had nobody to share with (see below).")  # fmt: skip
            c4.metric("Owners", f"{s.owners}", border=True)
        start = (month.replace(day=1) - dt.timedelta(days=335)).replace(day=1)
        trend = ui.guard("load cost per owner", by_owner, key, start, month, currency, metric)
        if trend is not None and not trend.empty:
            st.subheader("Cost per owner per month")
            st.plotly_chart(_trend_figure(trend, currency), key="showback_trend")
            table = trend.pivot_table(index="owner", columns="month", values="cost", aggfunc="sum").fillna(0)
            table.columns = [m.strftime("%Y-%m") for m in table.columns]
            table = table.sort_values(table.columns[-1], ascending=False)
            st.dataframe(table, width="stretch", column_config={c: st.column_config.NumberColumn(format="%.2f")
                                                                for c in table.columns})  # fmt: skip
            st.download_button("Download cost per owner (CSV)",
                               trend.assign(currency=currency, metric=metric).to_csv(index=False).encode(),
                               file_name=f"costlake-showback-{start:%Y-%m}-{month:%Y-%m}-{currency}.csv",
                               mime="text/csv", key="showback_download")  # fmt: skip
        why = ui.guard("explain the unallocated share", reasons, key, month, currency, metric)
        if why is not None and not why.empty:
            st.subheader("What is unallocated")
            st.caption("**unmatched**: no rule matched the cost · **no_basis**: a split rule matched but had no owner "
                       "with cost to share with that month.")  # fmt: skip
            st.dataframe(why, hide_index=True, width="stretch",
                         column_config={"cost": st.column_config.NumberColumn(format="%.2f")})  # fmt: skip

        st.subheader("Monthly report per owner")
        owners = sorted(set(trend[trend["month"] == month]["owner"])) if trend is not None and not trend.empty else []
        if owners:
            who = st.selectbox("Owner", owners, key="showback_owner")
            owner_lines = ui.guard("load the owner's lines", lines, key, who, month, currency, metric) or []
            c1, c2 = st.columns(2)
            c1.download_button("Report (CSV)", report.report_csv(owner_lines, owner=who, month=month, currency=currency),
                               file_name=f"showback-{who}-{month:%Y-%m}.csv", mime="text/csv",
                               key="showback_report_csv")  # fmt: skip
            page = report.report_html(owner_lines, owner=who, month=month, currency=currency, metric=metric,
                                      rules_version=s.rules_version if s else None,
                                      estate_total=s.total if s else None)  # fmt: skip
            c2.download_button("Printable report (HTML, print to PDF)", page,
                               file_name=f"showback-{who}-{month:%Y-%m}.html", mime="text/html",
                               key="showback_report_html")  # fmt: skip
            st.caption(f"{len(owner_lines)} lines for {who} in {month:%B %Y}.")

with hygiene_tab:
    found = ui.guard("list tag keys", raw_keys, key) or {}
    base = current.ruleset if current is not None else RuleSet()
    st.subheader("Tag key aliases")
    st.caption("Keys arrive trimmed and case-folded. Aliases fold other spellings into one key, for the rules and "
               "the coverage below. The preview shows what merges before you save.")  # fmt: skip
    separators = st.checkbox("Treat spaces, underscores and hyphens alike (\"cost center\" = \"cost-center\")",
                             value=base.tags.normalise_separators, key="showback_separators")  # fmt: skip
    alias_frame = pd.DataFrame(sorted(base.tags.aliases.items()), columns=["key found", "canonical key"])
    edited_aliases = st.data_editor(alias_frame, num_rows="dynamic", width="stretch", key="showback_aliases")
    st.subheader("Inherited tags")
    st.caption("As Azure's tag inheritance: a resource without the key gets its resource group's value, else its "
               "subscription's. Cost data carries resource tags only, so parents' tags are entered here "
               "(subscription by name or id; a group as `<subscription>/<group>` or just `<group>`).")  # fmt: skip
    inherit_rows = [("resource group", scope, k, v) for scope, kv in base.tags.inherit.resource_groups.items()
                    for k, v in kv.items()]  # fmt: skip
    inherit_rows += [("subscription", scope, k, v) for scope, kv in base.tags.inherit.subscriptions.items()
                     for k, v in kv.items()]  # fmt: skip
    inherit_frame = pd.DataFrame(inherit_rows, columns=["level", "scope", "key", "value"])
    edited_inherit = st.data_editor(
        inherit_frame, num_rows="dynamic", width="stretch", key="showback_inherit",
        column_config={"level": st.column_config.SelectboxColumn(options=["subscription", "resource group"],
                                                                 required=True)},
    )  # fmt: skip
    candidate = None
    try:
        aliases = {str(r["key found"]).strip(): str(r["canonical key"]).strip()
                   for _, r in edited_aliases.dropna().iterrows() if str(r["key found"]).strip()}  # fmt: skip
        subs: dict[str, dict[str, str]] = {}
        groups: dict[str, dict[str, str]] = {}
        for _, r in edited_inherit.dropna().iterrows():
            target = groups if r["level"] == "resource group" else subs
            target.setdefault(str(r["scope"]).strip(), {})[str(r["key"]).strip()] = str(r["value"]).strip()
        tags = TagSettings(normalise_separators=separators, aliases=aliases,
                           inherit=Inherit(subscriptions=subs, resource_groups=groups))  # fmt: skip
        candidate = RuleSet(version=base.version, tags=tags, rules=base.rules)
    except (ValueError, RulesError) as exc:
        st.error(f"These tag settings are not valid, nothing was saved: {exc}", icon="🚫")
    if candidate is not None and found:
        preview = pd.DataFrame(merge_preview(candidate, found))
        merging = preview[preview["merges"]]
        st.caption(f"Preview: {len(found)} keys found become {len(preview)} keys; "
                   f"{len(merging)} of them merge spellings.")  # fmt: skip
        st.dataframe(preview, hide_index=True, width="stretch", key="showback_merge_preview")
    if can_edit and candidate is not None and st.button("Save tag settings", key="showback_save_tags"):
        _save(candidate, comment="tag aliases and inheritance", what="Tag settings saved")
    auth.role_note(principal, auth.Role.editor, "Changing tag aliases and inheritance")

    st.subheader("Untagged share per key over time")
    cover = ui.guard("load tag coverage", coverage, key, currency)
    if cover is None or cover.empty:
        st.caption("No tag coverage yet (computed with the allocation).")
    else:
        latest = cover[cover["month"] == cover["month"].max()].sort_values("untagged_share")
        keys = st.multiselect("Keys", sorted(cover["tag_key"].unique()), default=list(latest["tag_key"][:6]),
                              key="showback_cover_keys")  # fmt: skip
        fig = go.Figure()
        for k in keys:
            part = cover[cover["tag_key"] == k]
            fig.add_scatter(x=part["month"], y=part["untagged_share"] * 100, name=k, mode="lines+markers")
        fig.update_layout(height=340, yaxis={"title": {"text": "untagged share of cost %"}, "range": [0, 100]},
                          margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"orientation": "h", "y": -0.2})  # fmt: skip
        st.plotly_chart(fig, key="showback_coverage")
        st.dataframe(latest.assign(untagged_share=latest["untagged_share"] * 100), hide_index=True, width="stretch",
                     column_config={"untagged_share": st.column_config.ProgressColumn(
                         "untagged %", min_value=0, max_value=100, format="%.1f")})  # fmt: skip

with rules_tab:
    st.caption("Rules apply in order; the first that matches a cost decides it. An assign rule gives it to an owner "
               "(a tag rule without `owner`: the tag's value); a split rule shares it evenly, in proportion to "
               "the owners' own cost, or by fixed percentages. Saving makes a new version and applies it at once.")  # fmt: skip
    text = current.rules_yaml if current is not None else EXAMPLE
    uploaded = st.file_uploader("Load a rules file (YAML)", type=["yaml", "yml"], key="showback_upload")
    if uploaded is not None:
        text = uploaded.getvalue().decode("utf-8", errors="replace")
    edited = st.text_area("Rules (YAML)", value=text, height=360, key=f"showback_yaml_{current.version if current else 0}"
                          f"_{uploaded.file_id if uploaded is not None else ''}")  # fmt: skip
    comment = st.text_input("What changed (kept with the version)", key="showback_comment")
    c1, c2 = st.columns(2)
    if can_edit and c1.button("Save and apply", type="primary", key="showback_save_rules"):
        _save(edited, comment=comment, what="Rules saved")
    try:
        c2.download_button("Export rules (YAML)", export_yaml(parse_yaml(edited)), file_name="costlake-allocation.yaml",
                           mime="application/yaml", key="showback_export")  # fmt: skip
    except RulesError as exc:
        st.warning(str(exc), icon="⚠️")
    auth.role_note(principal, auth.Role.editor, "Changing the allocation rules")
    versions = ui.guard("list the rule versions", allocation.list_versions, get_reader())
    if versions:
        st.subheader("Versions")
        st.dataframe(pd.DataFrame(versions), hide_index=True, width="stretch", key="showback_versions")
        pick = st.selectbox("Show version", [v["version"] for v in versions], key="showback_version_pick")
        chosen = ui.guard("read the version", allocation.get_version, get_reader(), pick)
        if chosen is not None:
            st.code(chosen.rules_yaml, language="yaml")
