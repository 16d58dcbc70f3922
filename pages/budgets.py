"""Budgets: create, edit and delete (validated), burn charts for the current period, and the alert history."""

from __future__ import annotations

import logging

import streamlit as st

from app import auth, charts, data, fmt, ui
from app.context import get_owner, get_reader

log = logging.getLogger(__name__)
st.title("Budgets")
principal = auth.current_principal()
can_edit = principal.can(auth.Role.editor)
status = ui.status_or_stop()
ui.data_as_of(status)

budgets = ui.guard("load budgets", data.list_budgets, get_owner())
if budgets is None:
    st.stop()
currencies = status.currencies or ["EUR"]
NEW = "➕ New budget"


def budget_form(current: dict | None) -> None:
    """One form for create and edit; validation errors are shown next to the form, nothing is saved."""
    editing = current is not None
    cur = current or {}
    sfx = cur.get("budget_id", "new")
    with st.form("budget_form" if not editing else f"budget_form_{cur['budget_id']}"):
        name = st.text_input("Name", value=cur.get("name", ""), key=f"bf_name_{sfx}")
        c1, c2, c3 = st.columns(3)
        scope = c1.selectbox("Scope", data.BUDGET_SCOPES, key=f"bf_scope_{sfx}",
                             index=data.BUDGET_SCOPES.index(cur.get("scope_type", "total")))  # fmt: skip
        scope_value = c2.text_input("Scope value", value=cur.get("scope_value", ""), key=f"bf_scope_value_{sfx}",
                                    help="Subscription id (guid or /subscriptions/<guid>) or name, resource group, service name or tag value; empty for total.")  # fmt: skip
        tag_key = c3.text_input("Tag key (tag scope)", value=cur.get("tag_key") or "", key=f"bf_tag_key_{sfx}")
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
            data.BUDGET_PERIODS,
            index=data.BUDGET_PERIODS.index(cur.get("period", "monthly")),
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
    try:
        if editing:
            data.update_budget(get_owner(), int(cur["budget_id"]), values, actor=principal)
        else:
            data.create_budget(get_owner(), values, actor=principal)
    except data.BudgetError as exc:
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
        for _, b in budgets.iterrows():
            bd = b.to_dict()
            burn = ui.guard(f"compute burn of {b['name']}", data.budget_burn, get_reader(), bd, as_of=status.as_of)
            if burn is None:
                continue
            start, end = data.period_bounds(b["period"], status.as_of)
            spent = float(burn["cumulative"].iloc[-1]) if not burn.empty else 0.0
            elapsed = (status.as_of - start).days + 1
            total_days = (end - start).days + 1
            projected = spent / elapsed * total_days if elapsed else None
            with st.container(border=True):
                h1, h2, h3 = st.columns([3, 2, 2])
                scope = b["scope_type"] if b["scope_type"] == "total" else f"{b['scope_type']} = {b['scope_value']}"
                h1.markdown(
                    f"**{b['name']}** · {scope} · {b['period']} · {b['metric']}"
                    + ("" if b["enabled"] else " · _disabled_")
                )
                h2.metric(
                    "Spent",
                    fmt.money(spent, b["currency"]),
                    delta=f"{spent / float(b['amount']):.0%} of {fmt.money(float(b['amount']), b['currency'])}",
                    delta_color="off",
                )
                h3.metric(
                    "Projected", fmt.money(projected, b["currency"]), help="Linear projection to the end of the period"
                )
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
                ui.guard("delete the budget", data.delete_budget, get_owner(), int(current["budget_id"]),
                         actor=principal) is not None
            ):  # fmt: skip
                ui.clear_reads()
                st.session_state["budget_flash"] = f"Budget {current['name']!r} deleted."
                st.session_state.pop("bf_choice", None)
                st.rerun()

with tab_alerts:
    alerts = ui.guard("load alert history", data.budget_alerts, get_reader())
    if alerts is not None and alerts.empty:
        st.caption("No alerts yet. The pipeline's **budgets** step evaluates thresholds after each load.")
    elif alerts is not None:
        st.dataframe(alerts, hide_index=True, width="stretch")
