"""Settings: env and .env parsing, secrets masked, placeholders refused outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.config import Settings, redact_url
from tests.conftest import make_settings


def test_empty_urls_mean_embedded(tmp_path):
    s = make_settings(tmp_path)
    assert s.database_url == "" and s.kafka_bootstrap_servers == "" and s.lake_uri == ""
    assert s.is_demo  # no Azure credentials -> demo estate


def test_env_and_subscription_list(monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_IDS", "sub-a, sub-b,,")
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "3")
    s = Settings(_env_file=None, data_dir=tmp_path)
    assert s.azure_subscription_ids == ["sub-a", "sub-b"]
    assert s.kafka_topic_partitions == 3


def test_dotenv_file_is_read(tmp_path):
    env = tmp_path / ".env"
    env.write_text("LAKE_URI=s3://bucket/prefix\nS3_SECRET_ACCESS_KEY=abc123xyz\n")
    s = Settings(_env_file=env, data_dir=tmp_path)
    assert s.lake_is_s3
    assert s.s3_secret_access_key.get_secret_value() == "abc123xyz"


def test_secrets_never_shown(tmp_path):
    s = make_settings(
        tmp_path,
        azure_client_secret="super-secret-value",
        database_url="postgresql://owner:pw-123@db:5432/costlake",
    )
    view = s.public_view()
    assert "super-secret-value" not in repr(s) and "super-secret-value" not in str(view)
    assert view["azure_client_secret"] == "***"
    assert view["database_url"] == "postgresql://owner:***@db:5432/costlake"


@pytest.mark.parametrize("field", ["azure_client_secret", "s3_secret_access_key", "llm_api_key"])
def test_placeholder_secret_refused_outside_development(tmp_path, field):
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(_env_file=None, data_dir=tmp_path, app_env="production", **{field: "changeme"})
    # In development the same value is accepted (local demos).
    Settings(_env_file=None, data_dir=tmp_path, app_env="development", **{field: "changeme"})


def test_placeholder_database_password_refused(tmp_path):
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(_env_file=None, data_dir=tmp_path, app_env="production", database_url="postgresql://u:postgres@h/db")


def test_bad_lake_uri_refused(tmp_path):
    with pytest.raises(ValidationError, match="LAKE_URI"):
        make_settings(tmp_path, lake_uri="gs://bucket")


def test_redact_url_without_password():
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("") == ""
