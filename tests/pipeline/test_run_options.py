"""A run's options are typed: the known ones reach the steps, an unknown or malformed one is refused up front."""

from __future__ import annotations

import pytest

from backend.pipeline.runner import RunOptions


def test_known_options_are_typed():
    options = RunOptions.of({"files": ["/in/a.csv", "/in/b.parquet"], "full_rebuild": 1})
    assert options == RunOptions(files=("/in/a.csv", "/in/b.parquet"), full_rebuild=True)
    assert RunOptions.of(None) == RunOptions.of({}) == RunOptions()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"full_rebuld": True}, "unknown run option.*full_rebuld.*files, full_rebuild"),
        ({"refetch_open_window": True}, "unknown run option.*refetch_open_window"),
        ({"files": "/in/a.csv"}, "list of paths"),
    ],
)
def test_a_bad_option_says_what_a_run_takes(given, message):
    with pytest.raises(ValueError, match=message):
        RunOptions.of(given)
