"""Uploads are checked before they reach the inbox: cost files and FX rates files alike, refused ones with the reason;
only editors and admins may upload, and an accepted file is audited with who uploaded it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.uploads import save_upload
from backend.auth import PermissionDenied
from backend.mart.audit import recent
from backend.mart.db import owner_engine
from backend.mart.migrate import upgrade
from backend.sources.files import FileRefusedError
from tests.auth.principals import EDITOR, VIEWER
from tests.conftest import make_settings

RATES = b"date,from,to,rate\n2026-09-30,USD,EUR,0.92\n2026-10-31,USD,EUR,0.93\n"


@pytest.fixture
def owner(pg_url):
    upgrade(pg_url)
    engine = owner_engine(pg_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def test_a_rates_file_upload_is_checked_and_waits_in_the_inbox(tmp_path, owner):
    settings = make_settings(tmp_path)
    saved = save_upload("fx-2026.csv", RATES, settings, actor=EDITOR, owner=owner)
    assert saved.format == "FX rates" and saved.rows == 2 and saved.last_day == "2026-10-31"
    assert saved.path.parent == settings.inbox_dir and saved.path.read_bytes() == RATES
    assert save_upload("fx-2026.csv", RATES, settings, actor=EDITOR, owner=owner).already_there
    entries = recent(owner)
    assert [(e.who, e.action, e.target) for e in entries] == [(EDITOR.email, "upload", saved.path.name)] * 2
    assert entries[0].detail["already_there"] and not entries[1].detail["already_there"]


def test_a_bad_rates_file_is_refused_naming_the_row_and_nothing_is_saved(tmp_path, owner):
    settings = make_settings(tmp_path)
    with pytest.raises(FileRefusedError, match="row 3"):
        save_upload(
            "fx.csv", b"date,from,to,rate\n2026-09-30,USD,EUR,0.92\n2026-10-31,USD,EUR,-1\n", settings,
            actor=EDITOR, owner=owner,
        )  # fmt: skip
    assert not settings.inbox_dir.exists() or not any(settings.inbox_dir.iterdir())


def test_a_viewer_cannot_upload_and_nothing_reaches_the_inbox(tmp_path, owner):
    settings = make_settings(tmp_path)
    with pytest.raises(PermissionDenied, match="Uploading files needs the editor role; you are viewer"):
        save_upload("fx-2026.csv", RATES, settings, actor=VIEWER, owner=owner)
    assert not settings.inbox_dir.exists()
    assert recent(owner) == []
