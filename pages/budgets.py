"""Budgets: create, edit and delete (validated), burn and outlook (forecast, its backtest error, the exceed date) of
the current period, the subscription of an ambiguous resource-group budget, and the alert history."""

from __future__ import annotations

import logging

import streamlit as st

from app import auth, budget_forms, charts, data, fmt, ui
from app.context import get_owner, get_reader
from backend.analytics import budgets as budget_store
from backend.mart import analytics, budgets_sql

log = logging.getLogger(__name__)
st.title("Budgets")
principal = auth.current_principal()
can_edit = principal.can(auth.Role.editor)
status = ui.status_or_stop()
ui.data_as_of(status)

budgets = ui.guard("load budgets", budget_forms.list_budgets, get_owner())
if budgets is None:
    st.stop()
currencies = status.currencies or ["EUR"]
NEW = "➕ New budget"
FILTER_LABELS = {
    "subscription": "Subscriptions",
    "service": "Services",
    "region": "Regions",
    "provider": "Providers (cloud)",
}


@st.cache_data(ttl=300, show_spinner=False)
def filter_options(version: str) -> dict[str, list[tuple[str, str]]]:
    return budgets_sql.filter_options(get_reader())


def filters_text(filters: dict | None) -> str:
    return " · ".join(f"{k} = {', '.join(v)}" for k, v in sorted((filters or {}).items()))


def outlook_metrics(b: dict, view: analytics.BudgetForecast | None, cols) -> float | None:
    """Forecast total, exceed date and backtest error of the evaluator's last outlook; the projection charted."""
    cur = b["currency"]
    if view is None:
        cols[0].metric("Forecast", "–", help="The pipeline's budgets step computes the outlook after each load.")
        cols[1].metric("Expected to exceed", "–")
        cols[2].metric("Forecast error", "–")
        return None
    projected = float(view.forecast_total) if view.forecast_total is not None else None
    interval = (
        f"; interval {fmt.money(float(view.lower_bound), cur)} – {fmt.money(float(view.upper_bound), cur)}"
        if view.lower_bound is not None and view.upper_bound is not None
        else ""
    )
    if view.method == "run_rate":
        cols[0].metric("Forecast", "not available", help="Under 28 days of history: the exceed date uses the run rate.")
    else:
        cols[0].metric("Forecast", fmt.money(projected, cur),
                       help=f"End of period ({view.period_end}), method {view.method}{interval}; as of {view.as_of}.")  # fmt: skip
    if view.exceed_date is None:
        exceed, note = "not expected this period", None
    elif view.exceed_date <= view.as_of:
        exceed, note = f"exceeded on {view.exceed_date}", None
    else:
        exceed, note = str(view.exceed_date), "expected to pass the amount on this day"
    cols[1].metric("Expected to exceed", exceed, help=note)
    if view.backtest_error is None:
        cols[2].metric("Forecast error", "not available", help="Too little history to backtest the forecast.")
    else:
        horizon = (view.backtest_metric or "").removeprefix("mape_").removesuffix("d_total")
        cols[2].metric(
            "Forecast error",
            f"MAPE {float(view.backtest_error):.1%}",
            help=f"Backtest {view.backtest_start} – {view.backtest_end}: mean absolute percentage error of the "
            f"{horizon}-day total over weekly origins.",
        )
    return projected


def pick_subscription(b: dict) -> None:
    """A resource-group budget from before groups were per subscription whose name is in several: ask which."""
    candidates = list(b.get("scope_candidates") or [])
    st.warning(
        f"Resource group **{b['scope_value']}** exists in "
        + (f"{len(candidates)} subscriptions" if candidates else "no loaded subscription")
        + ": pick the one this budget is for. It is not evaluated until then (no alerts).",
        icon="❓",
    )
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    key = f"bf_pick_{b['budget_id']}"
    if candidates:
        labels = dict(filter_options(status.version).get("subscription", []))
        choice = c1.selectbox("Subscription", candidates, key=key, format_func=lambda s: f"{labels.get(s, s)} ({s})")
    else:
        choice = c1.text_input("Subscription id", key=key, placeholder="/subscriptions/<guid>")
    if c2.button("Use this subscription", key=f"{key}_save", disabled=not can_edit or not choice):
        try:
            budget_store.update_budget(get_owner(), int(b["budget_id"]), actor=principal,
                                       filters={**(b.get("filters") or {}), "subscription": [choice]})  # fmt: skip
        except auth.PermissionDenied as exc:
            auth.refused(exc, target=b["name"])
        except ValueError as exc:
            st.error(f"{exc}.", icon="✋")
        else:
            ui.clear_reads()
            st.session_state["budget_flash"] = f"Budget {b['name']!r} now covers {b['scope_value']} in {choice}."
            st.rerun()


def budget_form(current: dict | None) -> None:
    """One form for create and edit; validation errors are shown next to the form, nothing is saved."""
    editing = current is not None
    cur = current or {}
    sfx = cur.get("budget_id", "new")
    with st.form("budget_form" if not editing else f"budget_form_{cur['budget_id']}"):
        name = st.text_input("Name", value=cur.get("name", ""), key=f"bf_name_{sfx}")
        c1, c2, c3 = st.columns(3)
        scope = c1.selectbox("Scope", budget_forms.BUDGET_SCOPES, key=f"bf_scope_{sfx}",
                             index=budget_forms.BUDGET_SCOPES.index(cur.get("scope_type", "total")))  # fmt: skip
        scope_value = c2.text_input("Scope value", value=cur.get("scope_value", ""), key=f"bf_scope_value_{sfx}",
                                    help="Subscription id (guid or /subscriptions/<guid>) or name, resource group (its subscription under Subscriptions), service name or tag value; empty for total.")  # fmt: skip
        tag_key = c3.text_input("Tag key (tag scope)", value=cur.get("tag_key") or "", key=f"bf_tag_key_{sfx}")
        options = filter_options(status.version)
        stored = cur.get("filters") or {}
        st.caption("Filters narrow the scope (all must hold; any of the values within one). A resource group "
                   "budget names its subscription here.")  # fmt: skip
        picked: dict[str, list[str]] = {}
        f_cols = st.columns(4)
        for col, (dim, label) in zip(f_cols, FILTER_LABELS.items(), strict=True):
            names = dict(options.get(dim, []))
            choices = list(dict.fromkeys([*names, *stored.get(dim, [])]))
            picked[dim] = col.multiselect(label, choices, default=stored.get(dim, []), key=f"bf_f_{dim}_{sfx}",
                                          format_func=lambda v, n=names: n.get(v, v))  # fmt: skip
        t1, t2 = st.columns(2)
        tag_stored = next(((k, v) for k, v in stored.items() if k.startswith("tag:")), ("", []))
        tag_filter_key = t1.text_input(
            "Tag filter key", value=tag_stored[0].removeprefix("tag:"), key=f"bf_f_tagkey_{sfx}"
        )
        tag_filter_values = t2.text_input("Tag filter values (comma-separated)", value=", ".join(tag_stored[1]),
                                          key=f"bf_f_tagvalues_{sfx}")  # fmt: skip
        c4, c5, c6, c7 = st.columns(4)
        amount = c4.number_input(
            "Amount", min_value=0.0, value=float(cur.get("amount", 0.0)), step=100.0, key=f"bf_amount_{sfx}"
        )
        cur_list = list(dict.fromkeys([*currencies, cur.get("currency", currencies[0])]))
        currency = c5.selectbox(
            "Currency", cur_list, index=cur_list.index(cur.get("currency", currencies[0])), key=f"bf_currency_{sfx}"
        )
        period = c6.selectbox(
            "Period",
            budget_forms.BUDGET_PERIODS,
            index=budget_forms.BUDGET_PERIODS.index(cur.get("period", "monthly")),
            key=f"bf_period_{sfx}",
        )
        metric = c7.selectbox(
            "Cost",
            list(data.METRICS),
            index=list(data.METRICS).index(cur.get("metric", "actual")),
            key=f"bf_metric_{sfx}",
        )
        thresholds = st.multiselect("Alert at (% of amount)", [25, 50, 75, 80, 90, 100, 110, 125, 150],
                                    default=[int(t) for t in cur.get("actual_thresholds", [50, 80, 100])], key=f"bf_thresholds_{sfx}")  # fmt: skip
        w1, w2 = st.columns([3, 1], vertical_alignment="bottom")
        webhook = w1.text_input(
            "Alert webhook URL (optional)",
            type="password",
            key=f"bf_webhook_{sfx}",
            placeholder="set: leave empty to keep it" if cur.get("has_webhook") else "https://…",
            help="Each newly crossed threshold is POSTed here as JSON. It is stored, never shown again.",
        )
        enabled = w2.checkbox("Enabled", value=bool(cur.get("enabled", True)), key=f"bf_enabled_{sfx}")
        submitted = st.form_submit_button(
            "Save changes" if editing else "Create budget", type="primary", disabled=not can_edit
        )
    if not submitted:
        return
    values = {"name": name, "scope_type": scope, "scope_value": scope_value, "tag_key": tag_key, "amount": amount,
              "currency": currency, "period": period, "metric": metric, "actual_thresholds": thresholds,
              "forecast_thresholds": cur.get("forecast_thresholds") or [100], "enabled": enabled,
              "webhook_url": webhook}  # fmt: skip
    filters = {dim: vals for dim, vals in picked.items() if vals}
    if tag_filter_key.strip():
        filters[f"tag:{tag_filter_key.strip()}"] = [v.strip() for v in tag_filter_values.split(",") if v.strip()]
    values["filters"] = filters
    try:
        if editing:
            budget_forms.update_budget(get_owner(), int(cur["budget_id"]), values, actor=principal)
        else:
            budget_forms.create_budget(get_owner(), values, actor=principal)
    except budget_forms.BudgetError as exc:
        st.error(str(exc), icon="✋")
        return
    except auth.PermissionDenied as exc:
        auth.refused(exc, target=name)
        return
    except Exception as exc:
        log.exception("saving budget %r failed", name)
        st.error(f"Could not save the budget: {type(exc).__name__}. The log has the details.", icon="⚠️")
        return
    ui.clear_reads()
    st.session_state["budget_flash"] = f"Budget {name!r} {'saved' if editing else 'created'}."
    st.rerun()


if flash := st.session_state.pop("budget_flash", None):
    st.success(flash)

tab_list, tab_edit, tab_alerts = st.tabs(["Budgets & burn", "Create / edit", "Alert history"])

with tab_list:
    if budgets.empty:
        st.info("No budgets yet. Create one in **Create / edit**: a scope, an amount and alert thresholds.", icon="🎯")
    elif status.empty:
        st.info("Budgets are set, but the mart has no cost yet: burn appears after the first pipeline run.")
    else:
        outlooks = ui.guard("load the budgets' outlook", analytics.budget_forecasts, get_reader()) or {}
        for _, b in budgets.iterrows():
            bd = b.to_dict()
            with st.container(border=True):
                scope = b["scope_type"] if b["scope_type"] == "total" else f"{b['scope_type']} = {b['scope_value']}"
                if b["scope_type"] == "tag":
                    scope = f"tag {b['tag_key']} = {b['scope_value']}"
                extra = filters_text(bd.get("filters"))
                st.markdown(
                    f"**{b['name']}** · {scope}" + (f" · {extra}" if extra else "") + f" · {b['period']} · "
                    f"{b['metric']} · {b['currency']}" + ("" if b["enabled"] else " · _disabled_")
                )
                if isinstance(bd.get("scope_candidates"), list):
                    pick_subscription(bd)
                    continue
                burn = ui.guard(
                    f"compute burn of {b['name']}", budget_forms.budget_burn, get_reader(), bd, as_of=status.as_of
                )
                if burn is None:
                    continue
                start, end = budget_forms.period_bounds(b["period"], status.as_of)
                spent = float(burn["cumulative"].iloc[-1]) if not burn.empty else 0.0
                view = outlooks.get(int(b["budget_id"]))
                if view is not None and view.period_start != start:
                    view = None  # an outlook of an earlier period
                h1, h2, h3, h4 = st.columns(4)
                h1.metric(
                    "Spent",
                    fmt.money(spent, b["currency"]),
                    delta=f"{spent / float(b['amount']):.0%} of {fmt.money(float(b['amount']), b['currency'])}",
                    delta_color="off",
                )
                projected = outlook_metrics(bd, view, (h2, h3, h4))
                if projected is None:
                    elapsed = (status.as_of - start).days + 1
                    projected = spent / elapsed * ((end - start).days + 1) if elapsed else None
                st.plotly_chart(charts.burn(burn, amount=float(b["amount"]), period_end=end, currency=b["currency"], forecast=projected),
                                key=f"burn_{b['budget_id']}")  # fmt: skip

with tab_edit:
    options = [NEW, *budgets["name"].tolist()]
    auth.role_note(principal, auth.Role.editor, "Creating, changing or deleting a budget")
    choice = st.selectbox("Budget", options, key="bf_choice")
    current = None if choice == NEW else budgets[budgets["name"] == choice].iloc[0].to_dict()
    budget_form(current)
    if current is not None:
        with st.popover("Delete this budget", disabled=not can_edit):
            st.write(f"Delete **{current['name']}**? Its alert history is kept.")
            if st.button("Delete", type="primary", key="bf_delete") and (
                ui.guard("delete the budget", budget_forms.delete_budget, get_owner(), int(current["budget_id"]),
                         actor=principal) is not None
            ):  # fmt: skip
                ui.clear_reads()
                st.session_state["budget_flash"] = f"Budget {current['name']!r} deleted."
                st.session_state.pop("bf_choice", None)
                st.rerun()

with tab_alerts:
    alerts = ui.guard("load alert history", budget_forms.budget_alerts, get_reader())
    if alerts is not None and alerts.empty:
        st.caption("No alerts yet. The pipeline's **budgets** step evaluates thresholds after each load.")
    elif alerts is not None:
        st.dataframe(alerts, hide_index=True, width="stretch")
