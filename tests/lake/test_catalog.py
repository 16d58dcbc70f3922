"""The table catalogue is self-consistent: every spec's partition and key columns are columns of its schema."""

from __future__ import annotations

import pytest

from backend.lake.catalog import TABLES, TableSpec, Write


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: s.name)
def test_partition_and_key_columns_are_in_the_schema(spec: TableSpec):
    names = set(spec.schema.names)
    assert set(spec.partition_by) <= names
    assert set(spec.key) <= names


def test_names_are_unique_and_layered():
    assert len({s.name for s in TABLES}) == len(TABLES)
    assert {s.layer for s in TABLES} == {"bronze", "silver", "gold"}


def test_merged_tables_declare_their_key():
    assert all(s.key for s in TABLES if s.write is Write.MERGE)
