"""The composition root: a process builds its resources here once (settings, servers, mart engines, lake).

Every process (the served app through app/process.py, the CLI, the MCP server, the notifier, tests) calls
`open_resources` once with its Runtime and passes the frozen `Resources` on: steps, pages and the agent
never build an engine or start a server themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from backend.config import Settings
from backend.lake import Lake
from backend.mart import db
from backend.mart.migrate import upgrade
from backend.runtime import Endpoints, Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What one process shares: built by `open_resources`, released by `close`."""

    runtime: Runtime  # the embedded (or joined external) servers
    settings: Settings  # resolved: the embedded servers' addresses filled in
    endpoints: Endpoints
    owner: sa.Engine  # the mart's owner role: pipeline writes, budgets, feedback, the audit
    reader: sa.Engine  # the read-only role with the statement timeout: pages, the agent, metrics
    lake: Lake

    def close(self) -> None:
        self.owner.dispose()
        self.reader.dispose()
        self.runtime.stop()


def open_resources(runtime: Runtime, *, spark: bool = False, kafka: bool = True) -> Resources:
    """Start (or join) the servers, migrate the mart and build its two engines.

    The reader's password and timeout are applied on every start, and a reader that cannot log in
    refuses the start with the setting to change (ReaderRoleError), rather than every page and agent
    question failing later. A process that only reads the mart passes `kafka=False`."""
    endpoints = runtime.start(spark=spark, kafka=kafka)
    upgrade(endpoints.database_url)
    settings = runtime.resolved_settings()
    db.check_reader(settings, owner_url=endpoints.database_url)
    owner = db.owner_engine(endpoints.database_url)
    reader = db.reader_engine(settings, owner_url=endpoints.database_url)
    return Resources(runtime, settings, endpoints, owner, reader, Lake(endpoints.lake))
