"""The chat page headless (AppTest): a question gets an answer, its SQL, its table and a download."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "chat.py")


@pytest.mark.slow
def test_chat_page_answers_with_sql_table_and_download(monkeypatch, agent_settings, demo_mart_url):
    import app.context
    from app.process import Server
    from backend.mart.db import owner_engine, reader_engine

    # The page asks the process's Server for its agent; the agent needs only the settings and the engines.
    reader, owner = reader_engine(agent_settings, owner_url=demo_mart_url), owner_engine(demo_mart_url)
    resources = SimpleNamespace(settings=agent_settings, reader=reader, owner=owner)
    server = Server(resources, pipeline=None, launcher=None, schedules=None)
    monkeypatch.setattr(app.context, "get_server", lambda: server)
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    at.chat_input[0].set_value("Daily cost for the last 7 days").run()
    assert not at.exception
    assert any("per day" in m.markdown[0].value for m in at.chat_message if m.markdown)
    assert any("FROM mart.agg_cost_daily" in c.value for c in at.code)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 7
    at.chat_input[0].set_value("what is the meaning of life?").run()
    assert not at.exception
    assert "rule-based" in at.chat_message[-1].markdown[0].value
    st.cache_resource.clear()
    reader.dispose()
    owner.dispose()
