"""The demo estate end to end: the pipeline's allocation step seeds the demo's rules, allocates (mart and gold,
conserving cost exactly), and the demo's rules and allocation leave with the demo."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.lake.catalog import GOLD_COST_ALLOCATION
from backend.mart import allocation
from tests.pipeline.services import pipeline_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STEPS = ["ingest", "bronze", "silver", "gold", "mart", "allocation"]

_SOURCE_VS_ALLOCATED = """
WITH src AS (SELECT a.charge_month, cur.currency_code AS c, sum(a.amortized_cost) AS e, sum(a.actual_cost) AS a
             FROM mart.agg_cost_resource_monthly a JOIN mart.dim_currency cur USING (currency_key) GROUP BY 1, 2),
     out AS (SELECT charge_month, billing_currency AS c, sum(amortized_cost) AS e, sum(actual_cost) AS a
             FROM mart.cost_allocation GROUP BY 1, 2)
SELECT count(*) AS months, count(*) FILTER (WHERE src.e IS DISTINCT FROM out.e OR src.a IS DISTINCT FROM out.a)
FROM src FULL JOIN out USING (charge_month, c)"""


@pytest.fixture
def service(tmp_path, pg_url, kafka_bootstrap):
    service = pipeline_service(tmp_path, pg_url, kafka_bootstrap, demo_mode=True, demo_rows=20_000)
    yield service
    service.close()


def test_demo_ships_rules_showback_has_data_and_cost_is_conserved(service):
    summary = service.run(steps=STEPS, trigger="test")
    assert summary.status == "succeeded", summary.error
    detail = summary.steps["allocation"].detail
    assert detail["demo_rules_seeded"] == 1 and detail["rules_version"] == 1
    assert 0 < detail["unallocated_share"] < 0.5, detail  # the 150k-row default demo: 9.6%
    with service.engine.connect() as conn:
        months, wrong = conn.execute(sa.text(_SOURCE_VS_ALLOCATED)).one()
        owners = set(conn.execute(sa.text("SELECT DISTINCT owner FROM mart.cost_allocation")).scalars())
        split = conn.execute(
            sa.text("SELECT count(*) FROM mart.cost_allocation WHERE allocated_method_id = 'shared-subscription'")
        ).scalar()
    assert months >= 12 and wrong == 0  # every month and currency conserved exactly
    assert len(owners - {None}) >= 4 and None in owners and split > 0
    gold = service.lake.read_arrow(GOLD_COST_ALLOCATION.name)
    assert gold.num_rows > 0 and set(gold.column("rules_version").to_pylist()) == {1}

    removed = service.run(steps=["remove_demo"], trigger="test")
    assert removed.status == "succeeded", removed.error
    assert allocation.current_rules(service.engine) is None
    with service.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mart.cost_allocation")).scalar() == 0
