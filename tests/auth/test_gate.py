"""The sign-in gate of every page (app.auth.current_principal), run headlessly with AppTest's simulated st.user:
signed out, signed in with a role, on no list, and past the maximum session age (signed out again)."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.auth.test_oidc import OIDC_SETTINGS
from tests.conftest import make_settings

GATE = """
import streamlit as st
from app import auth

principal = auth.current_principal()
auth.sidebar(principal)
st.write(f"inside as {principal.who} ({principal.role.name}, {principal.kind})")
"""


@pytest.fixture
def configure(tmp_path, monkeypatch):
    import app.context

    # A developer's own .streamlit/secrets.toml must not decide these tests' sign-in mode.
    monkeypatch.setattr("backend.auth.oidc.REPO_ROOT", tmp_path)

    def apply(**values):
        settings = make_settings(tmp_path, **values)
        monkeypatch.setattr(app.context, "settings", lambda: settings)
        return settings

    return apply


def _run(user: dict | None, *, streamlit_auth: bool = True) -> AppTest:
    at = AppTest.from_string(GATE, default_timeout=30)
    if streamlit_auth:
        # What app.serve hands Streamlit (the generated secrets file's [auth] section).
        at.secrets["auth"] = {"redirect_uri": OIDC_SETTINGS["auth_redirect_uri"], "client_id": "costlake"}
    if user is not None:
        at.user = user
    return at.run()


def _body(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("title", "markdown", "warning", "caption") for e in getattr(at, kind))


def test_laptop_mode_lets_the_one_local_user_in_without_a_screen(configure):
    configure()
    at = _run(None)
    assert "inside as local:" in _body(at) and "(admin, local)" in _body(at)
    assert not at.button  # no sign-in and no sign-out button


def test_signed_out_users_see_only_the_sign_in_button(configure):
    configure(**OIDC_SETTINGS, auth_viewers="@example.com")
    at = _run({"is_logged_in": False})
    assert [b.label for b in at.button] == ["Sign in"]
    assert "inside as" not in _body(at)


def test_a_listed_user_gets_their_role_and_a_sign_out_button(configure):
    configure(**OIDC_SETTINGS, auth_editors="ed@example.com")
    at = _run({"is_logged_in": True, "email": "ed@example.com", "name": "Ed", "iat": time.time() - 60})
    assert "inside as ed@example.com (editor, user)" in _body(at)
    assert "Signed in as **ed@example.com** · editor" in _body(at)
    assert [b.label for b in at.button] == ["Sign out"]


def test_a_user_on_no_list_is_refused_with_what_to_ask_for(configure):
    configure(**OIDC_SETTINGS, auth_editors="ed@example.com")
    at = _run({"is_logged_in": True, "email": "eve@example.org", "iat": time.time()})
    body = _body(at)
    assert "No access to Costlake" in body and "eve@example.org" in body and "AUTH_VIEWERS" in body
    assert "inside as" not in body


def test_a_session_past_the_maximum_age_is_signed_out(configure):
    configure(**OIDC_SETTINGS, auth_admins="ada@example.com", auth_max_session_hours=12)
    at = _run({"is_logged_in": True, "email": "ada@example.com", "iat": time.time() - 13 * 3600})
    assert "inside as" not in _body(at)
    assert at.user == {"is_logged_in": False}  # st.logout() ran: the login cookie is cleared


def test_sign_in_configured_but_not_handed_to_streamlit_lets_nobody_in(configure):
    # `streamlit run app/main.py` with AUTH_* set: st.login cannot work, and the app must not fall open.
    configure(**OIDC_SETTINGS, auth_admins="ada@example.com")
    at = _run({"is_logged_in": True, "email": "ada@example.com", "iat": time.time()}, streamlit_auth=False)
    assert "inside as" not in _body(at)
    assert [e.value for e in at.title] == ["Sign-in is not available"]
    assert "python -m app.serve" in at.error[0].value
