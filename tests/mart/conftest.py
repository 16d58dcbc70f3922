"""Fixtures for mart tests: a migrated database, owner and reader engines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from backend.mart.db import reader_engine
from backend.mart.migrate import upgrade
from tests.conftest import make_settings


@pytest.fixture
def mart_url(pg_url: str) -> str:
    """A fresh database migrated to head."""
    upgrade(pg_url)
    return pg_url


@pytest.fixture
def mart_settings(tmp_path, mart_url):
    return make_settings(tmp_path, database_url=mart_url, lake_uri=str(tmp_path / "lake"))


@pytest.fixture
def owner(mart_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mart_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def reader(mart_settings) -> Iterator[sa.Engine]:
    engine = reader_engine(mart_settings, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()
