"""The Anomalies page run headlessly (AppTest) on a seeded mart: the settings form per level (saved, audited,
refused to a viewer) and the list filtered by provider (cloud)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.analytics import anomaly_settings
from tests.ui.conftest import app_runtime, app_server, page, pipeline, seeded, texts, ui_settings  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(300)


def _frame(at, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _save(at, label: str = "Save settings"):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception


def test_settings_form_saves_a_level_and_resets_it(seeded, pipeline):  # noqa: F811
    at = page("anomalies").run()
    assert not at.exception and [e.value for e in at.error] == []
    levels = at.selectbox(key="as_level").options
    assert levels[0] == "total" and "service" in levels  # every ANOMALY_LEVELS level and the total
    at.selectbox(key="as_level").set_value("service").run()
    at.number_input(key="as_sensitivity_service").set_value(3.0)
    at.number_input(key="as_history_days_service").set_value(28)
    _save(at)
    assert any("next analytics run" in s.value for s in at.success)
    saved = anomaly_settings.stored(pipeline.engine)["service"]
    # Only what differs from the environment's defaults is the level's own.
    assert (saved["sensitivity"], saved["history_days"], saved["min_cost_impact"]) == (3.0, 28, None)
    with pipeline.engine.connect() as conn:
        audit = conn.execute(sa.text("SELECT action, target FROM ops.user_audit ORDER BY audit_id")).all()
    assert [tuple(a) for a in audit] == [("anomaly.settings", "level service")]
    at.run()  # the table is drawn before the form: the next run shows the level's own values
    row = next(r for r in _frame(at, "own settings").to_dict("records") if r["level"] == "service")
    assert row["own settings"] == "sensitivity, history_days" and row["Sensitivity (robust z)"] == 3.0
    _save(at, "Back to defaults")
    assert anomaly_settings.stored(pipeline.engine) == {}


def test_a_viewer_sees_the_settings_but_cannot_save(seeded, pipeline, monkeypatch):  # noqa: F811
    from app import auth
    from tests.auth.principals import VIEWER

    monkeypatch.setattr(auth, "current_principal", lambda: VIEWER)
    at = page("anomalies").run()
    assert not at.exception
    assert next(b for b in at.button if b.label == "Save settings").disabled
    assert "needs the editor role" in texts(at) or any("editor" in c.value for c in at.caption)


def test_the_list_is_filtered_by_provider(seeded, pipeline):  # noqa: F811
    with pipeline.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO mart.dim_provider (provider_name) VALUES ('AWS') ON CONFLICT DO NOTHING"))
        aws = conn.execute(sa.text("SELECT provider_key FROM mart.dim_provider WHERE provider_name = 'AWS'")).scalar()
        day = conn.execute(
            sa.text("SELECT charge_date FROM mart.anomalies WHERE level = 'service' AND dimension_value = 'Storage'")
        ).scalar_one()
        # Storage's cost that day is on AWS: the service anomaly is AWS's; the total one (another day) is not.
        conn.execute(
            sa.text(
                "UPDATE mart.agg_cost_daily SET provider_key = :p WHERE charge_date = :d AND service_key IN"
                " (SELECT service_key FROM mart.dim_service WHERE service_name = 'Storage')"
            ),
            {"p": aws, "d": day},
        )
    at = page("anomalies").run()
    assert not at.exception
    assert at.selectbox(key="an_status").value == "open" and len(_frame(at, "series")) == 2
    at.multiselect(key="an_providers").select("AWS").run()
    assert not at.exception
    listed = _frame(at, "series")
    assert list(listed["series"]) == ["service · Storage"] and list(listed["provider"]) == ["AWS"]
