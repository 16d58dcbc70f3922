"""Anomaly settings per level on real Postgres: stored, audited, refused to a viewer, turned into detector params."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.analytics import anomaly_settings, scoring
from backend.auth import PermissionDenied
from backend.config import Settings
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from tests.auth.principals import EDITOR, VIEWER

pytestmark = pytest.mark.slow  # a fresh migrated database per test


@pytest.fixture
def owner(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _audit(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT who, action, target, outcome, detail FROM ops.user_audit ORDER BY audit_id")
            )
        ]


def test_settings_are_stored_per_level_and_audited(owner):
    anomaly_settings.save(owner, "service", actor=EDITOR, sensitivity="3", history_days=28, min_cost_impact=50)
    saved = anomaly_settings.stored(owner)
    assert {k: saved["service"][k] for k in anomaly_settings.FIELDS} == {
        "sensitivity": 3.0,
        "history_days": 28,
        "min_cost_impact": 50.0,
        "min_relative_impact": None,  # the environment's default
    }
    assert saved["service"]["updated_by"] == EDITOR.who
    assert _audit(owner) == [
        (
            EDITOR.who,
            "anomaly.settings",
            "level service",
            "done",
            {"sensitivity": 3.0, "history_days": 28, "min_cost_impact": 50.0},
        )
    ]
    # Saving again replaces the row: what is not given goes back to the default.
    anomaly_settings.save(owner, "service", actor=EDITOR, sensitivity=6)
    assert anomaly_settings.stored(owner)["service"]["history_days"] is None
    assert anomaly_settings.reset(owner, "service", actor=EDITOR) is True
    assert anomaly_settings.stored(owner) == {}
    assert [a[1] for a in _audit(owner)] == ["anomaly.settings", "anomaly.settings", "anomaly.settings.reset"]


def test_a_viewer_is_refused_and_nothing_changes(owner):
    with pytest.raises(PermissionDenied, match="Changing anomaly settings needs the editor role; you are viewer"):
        anomaly_settings.save(owner, "total", actor=VIEWER, sensitivity=2)
    with pytest.raises(PermissionDenied):
        anomaly_settings.reset(owner, "total", actor=VIEWER)
    assert anomaly_settings.stored(owner) == {}


@pytest.mark.parametrize(
    ("level", "values", "message"),
    [
        ("planet", {"sensitivity": 2}, "unknown analysis level 'planet'"),
        ("tag:", {"sensitivity": 2}, "unknown analysis level"),
        ("service", {"sensitivity": 0}, r"sensitivity must be between 0.5 and 20"),
        ("service", {"history_days": 7}, r"history_days must be between 14 and 365"),
        ("service", {"history_days": 20.5}, "whole number of days"),
        ("service", {"min_cost_impact": "lots"}, "min_cost_impact must be a number"),
        ("service", {"colour": 1}, "unknown anomaly setting 'colour'"),
    ],
)
def test_bad_settings_are_refused_with_what_to_do(owner, level, values, message):
    with pytest.raises(ValueError, match=message):
        anomaly_settings.save(owner, level, actor=EDITOR, **values)
    assert anomaly_settings.stored(owner) == {} and _audit(owner) == []


def test_the_environment_is_the_default_and_a_level_overrides_it(owner):
    settings = Settings(_env_file=None, anomaly_sensitivity=4.0, anomaly_history_days=56)
    anomaly_settings.save(owner, "tag:team", actor=EDITOR, sensitivity=2.5, history_days=84)
    saved = anomaly_settings.stored(owner)
    params = anomaly_settings.params_by_level(settings, saved, ["total", "service", "tag:team"])
    assert params["service"] == anomaly_settings.defaults(settings)
    assert (params["tag:team"].sensitivity, params["tag:team"].history_days) == (2.5, 84)
    assert params["tag:team"].min_cost_impact == settings.anomaly_min_cost_impact
    rows = {r["level"]: r for r in anomaly_settings.effective(settings, saved)}
    assert rows["tag:team"]["sensitivity_set"] and not rows["tag:team"]["min_cost_impact_set"]
    assert rows["total"]["sensitivity"] == 4.0 and not rows["total"]["sensitivity_set"]
    # The scoring fingerprint: unchanged while every level is on the defaults, new once one is not (the next
    # analytics run rescores under the new settings).
    levels, metrics, base = ["service", "tag:team"], ["actual"], anomaly_settings.defaults(settings)
    plain = scoring.config_fingerprint(levels, metrics, base)
    defaults_only = anomaly_settings.params_by_level(settings, {}, ["total", *levels])
    assert scoring.config_fingerprint(levels, metrics, base, defaults_only) == plain
    assert scoring.config_fingerprint(levels, metrics, base, params) != plain
