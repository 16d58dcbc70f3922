"""The demo mart the agent is scored on spells subscriptions as the pipeline's mart does."""

from __future__ import annotations

import sqlalchemy as sa

from backend.sources.ids import canonical_subscription_id


def test_seeded_subscription_ids_take_the_silver_form(owner):
    with owner.connect() as conn:
        subs = conn.execute(sa.text("SELECT subscription_id FROM mart.dim_subscription WHERE subscription_id <> ''"))
        ids = list(subs.scalars())
        groups = set(conn.execute(sa.text("SELECT DISTINCT subscription_id FROM mart.dim_resource_group")).scalars())
        resources = conn.execute(sa.text("SELECT resource_id FROM mart.dim_resource WHERE resource_id <> ''"))
        resource_ids = list(resources.scalars())
    assert len(ids) == 3 and all(s.startswith("/subscriptions/") and canonical_subscription_id(s) == s for s in ids)
    assert groups - {""} <= set(ids)
    assert all(any(r.startswith(f"{s}/resourcegroups/") for s in ids) for r in resource_ids)
