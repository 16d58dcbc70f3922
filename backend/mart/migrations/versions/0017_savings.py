"""Waste and savings (issue 24): contracted cost and commitment use on the fact and aggregates; cost changes.

Revision ID: 0017_savings
Revises: 0016_auth_audit

The fact and its aggregates gain contracted_cost (FOCUS ContractedCost) and the effective cost that
commitments covered (commitment_used_cost) or left idle (commitment_unused_cost), so the Waste & savings
page can show list vs contracted vs effective cost and commitment utilisation from the tables it already
reads. Null means "the source does not carry it" (Azure exports have no ContractedCost), never 0. Rows
loaded before this revision have null there until their month is loaded again.

mart.resource_cost_changes holds gold's resource_cost_changes (resources whose cost started after a gap
or stopped before one), replaced per month by the loader, with natural ids (it is small and read by id).

The agent's views (v_cost_daily, v_cost_daily_summary, v_cost_monthly) gain the three measures at their
end, so its guarded SQL can answer savings questions; the reader may read the new table.
"""

from alembic import op

revision = "0017_savings"
down_revision = "0016_auth_audit"
branch_labels = None
depends_on = None

MONEY = "numeric(28,12)"
SUM = "numeric(38,12)"
_MEASURES = ("contracted_cost", "commitment_used_cost", "commitment_unused_cost")
_AGGREGATES = ("agg_cost_daily", "agg_cost_monthly", "agg_cost_resource_monthly")


def upgrade() -> None:
    # Nullable without a default: metadata only, also on the partitioned fact (reaches every partition).
    op.execute("ALTER TABLE mart.fact_cost_daily " + ", ".join(f"ADD COLUMN {m} {MONEY}" for m in _MEASURES))
    for table in _AGGREGATES:
        op.execute(f"ALTER TABLE mart.{table} " + ", ".join(f"ADD COLUMN {m} {SUM}" for m in _MEASURES))
    op.execute(
        f"""
        CREATE TABLE mart.resource_cost_changes (
            charge_month date NOT NULL,
            event_date date NOT NULL,
            event text NOT NULL CHECK (event IN ('started', 'stopped')),
            resource_id text NOT NULL,
            subscription_id text NOT NULL,
            resource_group text NOT NULL,
            service_name text NOT NULL,
            currency_code text NOT NULL,
            daily_cost {MONEY},
            load_id bigint
        )"""
    )
    op.execute("CREATE INDEX ix_resource_cost_changes_month ON mart.resource_cost_changes (charge_month, event)")
    op.execute("GRANT SELECT ON mart.resource_cost_changes TO costlake_reader")
    _views(with_savings=True)


# The views as 0012 left them (a frozen copy: a later change of the views is a migration of its own), with
# the savings measures appended (CREATE OR REPLACE VIEW may only add columns at the end).
_JOINS = """
    JOIN mart.dim_billing_account ba USING (billing_account_key)
    JOIN mart.dim_subscription s USING (subscription_key)
    JOIN mart.dim_resource_group rg USING (resource_group_key)
    JOIN mart.dim_service sv USING (service_key)
    JOIN mart.dim_region rgn USING (region_key)
    JOIN mart.dim_pricing_model pm USING (pricing_model_key)
    JOIN mart.dim_charge_category cc USING (charge_category_key)
    JOIN mart.dim_currency cur USING (currency_key)
    JOIN mart.dim_source src USING (source_key)
    JOIN mart.dim_provider pv USING (provider_key)
    JOIN mart.dim_service_provider sp USING (service_provider_key)"""
_NAMES = """
    ba.billing_account_id, ba.label AS billing_account, s.subscription_id, s.label AS subscription,
    rg.label AS resource_group, sv.label AS service_name, sv.service_category, rgn.label AS region,
    pm.label AS pricing_model, cc.label AS charge_category, cur.currency_code AS currency, src.source"""
_BASE = ("actual_cost", "amortized_cost", "list_cost", "quantity")
_PROVIDERS = ", pv.label AS provider, sp.label AS service_provider"
_VIEWS = ("v_cost_daily", "v_cost_daily_summary", "v_cost_monthly")


def _views(*, with_savings: bool) -> None:
    if not with_savings:
        for view in _VIEWS:
            op.execute(f"DROP VIEW mart.{view}")

    def measures(alias: str) -> str:
        base = ", ".join(f"{alias}.{m}" for m in _BASE) + _PROVIDERS
        return base + ("".join(f", {alias}.{m}" for m in _MEASURES) if with_savings else "")

    op.execute(
        f"""CREATE OR REPLACE VIEW mart.v_cost_daily AS
        SELECT f.charge_date, {_NAMES},
               r.resource_id, r.label AS resource_name, r.resource_type,
               m.meter_category, m.label AS meter_name, m.pricing_unit,
               {measures("f")}
        FROM mart.fact_cost_daily f
        JOIN mart.dim_resource r USING (resource_key)
        JOIN mart.dim_meter m USING (meter_key)
        {_JOINS}"""
    )
    for view, table, period in (
        ("v_cost_daily_summary", "agg_cost_daily", "charge_date"),
        ("v_cost_monthly", "agg_cost_monthly", "charge_month"),
    ):
        op.execute(
            f"CREATE OR REPLACE VIEW mart.{view} AS SELECT a.{period}, {_NAMES}, {measures('a')} "
            f"FROM mart.{table} a {_JOINS}"
        )
    for view in _VIEWS:
        op.execute(f"GRANT SELECT ON mart.{view} TO costlake_reader")


def downgrade() -> None:
    _views(with_savings=False)
    op.execute("DROP TABLE IF EXISTS mart.resource_cost_changes")
    for table in _AGGREGATES:
        op.execute(f"ALTER TABLE mart.{table} " + ", ".join(f"DROP COLUMN {m}" for m in _MEASURES))
    op.execute("ALTER TABLE mart.fact_cost_daily " + ", ".join(f"DROP COLUMN {m}" for m in _MEASURES))
