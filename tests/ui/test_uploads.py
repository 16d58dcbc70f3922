"""Uploads are checked before they reach the inbox: cost files and FX rates files alike, refused ones with the reason."""

from __future__ import annotations

import pytest

from app.uploads import save_upload
from backend.sources.files import FileRefusedError
from tests.conftest import make_settings

RATES = b"date,from,to,rate\n2026-09-30,USD,EUR,0.92\n2026-10-31,USD,EUR,0.93\n"


def test_a_rates_file_upload_is_checked_and_waits_in_the_inbox(tmp_path):
    settings = make_settings(tmp_path)
    saved = save_upload("fx-2026.csv", RATES, settings)
    assert saved.format == "FX rates" and saved.rows == 2 and saved.last_day == "2026-10-31"
    assert saved.path.parent == settings.inbox_dir and saved.path.read_bytes() == RATES
    assert save_upload("fx-2026.csv", RATES, settings).already_there


def test_a_bad_rates_file_is_refused_naming_the_row_and_nothing_is_saved(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(FileRefusedError, match="row 3"):
        save_upload("fx.csv", b"date,from,to,rate\n2026-09-30,USD,EUR,0.92\n2026-10-31,USD,EUR,-1\n", settings)
    assert not settings.inbox_dir.exists() or not any(settings.inbox_dir.iterdir())
