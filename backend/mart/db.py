"""The one engine factory (owner for writes, reader for pages and agent, server admin) and the reader role's bootstrap."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from backend.config import Settings

log = logging.getLogger(__name__)

READER_ROLE = "costlake_reader"


def readonly_url(settings: Settings, *, owner_url: str | None = None) -> str:
    """URL of the read-only role: DATABASE_READONLY_URL when set, else the owner URL with the user swapped.

    `owner_url` is the resolved owner URL (the embedded server's when DATABASE_URL is empty).
    """
    if settings.database_readonly_url:
        return settings.database_readonly_url
    base = owner_url or settings.database_url
    if not base:
        raise ValueError("no database URL: start the runtime and pass Endpoints.database_url as owner_url")
    password = settings.database_readonly_password.get_secret_value() if settings.database_readonly_password else None
    owner = make_url(base)
    # URL.set(password=None) keeps the owner's password; build the URL anew so it can never leak across.
    url = URL.create(
        owner.drivername,
        username=READER_ROLE,
        password=password,
        host=owner.host,
        port=owner.port,
        database=owner.database,
        query=owner.query,
    )
    return url.render_as_string(hide_password=False)


def reader_role_name(settings: Settings, *, owner_url: str | None = None) -> str:
    return make_url(readonly_url(settings, owner_url=owner_url)).username or READER_ROLE


def owner_engine(database_url: str, **kwargs) -> Engine:
    """The pipeline's engine (owner role); the loader and writers of analytics/budgets/audit use it."""
    return sa.create_engine(database_url, pool_pre_ping=True, **kwargs)


def admin_engine(server_url: str) -> Engine:
    """Engine on the server's admin database, to create and drop databases: autocommit, since CREATE/DROP
    DATABASE refuse to run in a transaction, and no pool, so no idle connection outlives its use."""
    return sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def reader_engine(settings: Settings, *, owner_url: str | None = None, **kwargs) -> Engine:
    """Engine on the read-only role; every session is read-only with the statement timeout from settings,
    even against a server where the role's own defaults were never set."""
    options = f"-c default_transaction_read_only=on -c statement_timeout={int(settings.statement_timeout_ms)}"
    return sa.create_engine(
        readonly_url(settings, owner_url=owner_url),
        pool_pre_ping=True,
        connect_args={"options": options, "application_name": "costlake-reader"},
        **kwargs,
    )


def ping(engine: Engine) -> None:
    """Connect and run a trivial statement: raises when the role cannot log in or reach the database."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def ensure_reader_role(settings: Settings, *, owner_url: str | None = None) -> str:
    """Idempotent bootstrap after migrations: (re)applies the reader's password and statement timeout from
    settings. The migration created the role and its grants; this only carries the settings' values.
    Returns the role name."""
    role = reader_role_name(settings, owner_url=owner_url)
    engine = owner_engine(owner_url or settings.database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
            ident = conn.dialect.identifier_preparer.quote(role)
            if not exists:
                # A custom reader name from DATABASE_READONLY_URL: create it with the same grants.
                conn.execute(sa.text(f"CREATE ROLE {ident} LOGIN"))
                conn.execute(sa.text(f"GRANT {READER_ROLE} TO {ident}"))
            conn.execute(sa.text(f"ALTER ROLE {ident} SET default_transaction_read_only = on"))
            conn.execute(sa.text(f"ALTER ROLE {ident} SET statement_timeout = {int(settings.statement_timeout_ms)}"))
            if settings.database_readonly_password is not None:
                # psycopg2 interpolates client-side, so the password is quoted by the driver, never by us.
                with conn.connection.dbapi_connection.cursor() as cur:
                    cur.execute(
                        f"ALTER ROLE {ident} PASSWORD %s", (settings.database_readonly_password.get_secret_value(),)
                    )
        log.info("read-only role %s ready (statement_timeout %s ms)", role, settings.statement_timeout_ms)
    finally:
        engine.dispose()
    return role


class ReaderRoleError(RuntimeError):
    """The read-only role cannot connect with the settings given; the message names the setting to change."""


def check_reader(settings: Settings, *, owner_url: str | None = None) -> None:
    """Apply the reader's settings and prove it can connect: at start, so a deployment whose reader cannot log
    in is refused with the setting to change instead of failing every agent question later."""
    ensure_reader_role(settings, owner_url=owner_url)
    engine = reader_engine(settings, owner_url=owner_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        if settings.database_readonly_url:
            fix = "check DATABASE_READONLY_URL (its user, password and host)"
        elif settings.database_readonly_password is None:
            fix = (
                "set DATABASE_READONLY_PASSWORD (Costlake sets it on the costlake_reader role at start), or "
                "DATABASE_READONLY_URL for a reader you manage"
            )
        else:
            fix = "DATABASE_READONLY_PASSWORD is set but refused: check the server's pg_hba.conf for costlake_reader"
        raise ReaderRoleError(f"the read-only database role cannot connect ({first}): {fix}") from None
    finally:
        engine.dispose()
