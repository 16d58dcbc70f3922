"""The read-only role can read the mart and cannot write, change the schema, or read secrets."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from backend.mart.db import READER_ROLE, ensure_reader_role, readonly_url
from tests.conftest import make_settings


def test_readonly_url_swaps_the_user(tmp_path):
    settings = make_settings(tmp_path, database_url="postgresql+psycopg2://owner:pw@db:5432/costlake")
    assert readonly_url(settings) == f"postgresql+psycopg2://{READER_ROLE}@db:5432/costlake"
    settings = make_settings(tmp_path, database_readonly_url="postgresql+psycopg2://ro:x@db/c")
    assert readonly_url(settings) == "postgresql+psycopg2://ro:x@db/c"


def test_reader_reads(reader):
    with reader.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mart.dim_service")).scalar() == 1  # the (none) member
        assert conn.execute(sa.text("SELECT label FROM mart.dim_service")).scalar() == "(none)"
        assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "on"
        conn.execute(sa.text("SELECT count(*) FROM mart.v_cost_daily")).scalar()
        conn.execute(sa.text("SELECT count(*) FROM mart.v_budgets")).scalar()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO mart.dim_service (service_name, service_category) VALUES ('x', 'y')",
        "UPDATE mart.dim_service SET service_category = 'z'",
        "DELETE FROM mart.load_history",
        "CREATE TABLE mart.evil (x int)",
        "DROP TABLE mart.fact_cost_daily",
        "TRUNCATE mart.anomalies",
        "SELECT webhook_url FROM mart.budgets",
        "SELECT * FROM ops.source_batches",
    ],
)
def test_reader_cannot_write_even_after_leaving_read_only_mode(reader, statement):
    # The session default is a convenience; a client can turn it off. The grants must still refuse.
    with reader.connect() as conn:
        conn.execute(sa.text("SET default_transaction_read_only = off"))
        conn.commit()
        with pytest.raises(DBAPIError) as err:
            conn.execute(sa.text(statement))
        assert err.value.orig.pgcode in {"42501", "25006"}, err.value  # insufficient_privilege / read_only


def test_reader_statement_timeout(reader):
    with reader.connect() as conn, pytest.raises(DBAPIError) as err:
        conn.execute(sa.text("SET statement_timeout = 200"))
        conn.execute(sa.text("SELECT pg_sleep(2)"))
    assert err.value.orig.pgcode == "57014"  # query_canceled


def test_ensure_reader_role_is_idempotent_and_sets_password(mart_settings, mart_url, owner):
    settings = make_settings(
        mart_settings.data_dir,
        database_url=mart_url,
        database_readonly_password="s3cr'et%:pw",
        statement_timeout_ms=1234,
    )
    assert ensure_reader_role(settings) == READER_ROLE
    assert ensure_reader_role(settings) == READER_ROLE
    with owner.connect() as conn:
        config = conn.execute(sa.text("SELECT rolconfig FROM pg_roles WHERE rolname = :r"), {"r": READER_ROLE}).scalar()
        has_password = conn.execute(
            sa.text("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = :r"), {"r": READER_ROLE}
        ).scalar()
    assert "statement_timeout=1234" in config and "default_transaction_read_only=on" in config
    assert has_password


def test_a_reader_that_cannot_connect_refuses_the_start_naming_the_setting(mart_settings, mart_url):
    from sqlalchemy.engine import make_url

    from backend.mart.db import ReaderRoleError, check_reader

    check_reader(mart_settings, owner_url=mart_url)  # the embedded server: the reader connects
    owner = make_url(mart_url)
    wrong = owner.set(username="no_such_reader", password="x", database="no_such_db").render_as_string(
        hide_password=False
    )
    bad = mart_settings.model_copy(update={"database_readonly_url": wrong})
    with pytest.raises(ReaderRoleError, match="DATABASE_READONLY_URL"):
        check_reader(bad, owner_url=mart_url)
