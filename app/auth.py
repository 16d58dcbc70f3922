"""Who uses this session: the signed-in user (st.login / st.user) with their role, or the laptop's one user;
the sign-in, refusal and expiry screens, the sidebar's logout, and how a page reports a refused action."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from backend.auth import PermissionDenied, Principal, Role, local_principal
from backend.auth.oidc import DISABLED, LAPTOP, AuthMode, auth_mode, secrets_toml_auth, session_expired
from backend.auth.policy import RolePolicy, principal_from_claims
from backend.mart.audit import record_now

log = logging.getLogger(__name__)

__all__ = ["PermissionDenied", "Role", "current_principal", "mode", "refused", "sidebar"]


def _settings():
    from app.context import settings

    return settings()


def mode() -> AuthMode:
    return auth_mode(_settings())


def _streamlit_has_auth() -> bool:
    """Whether Streamlit itself has an [auth] section (what st.login reads), whoever wrote it."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, StreamlitSecretNotFoundError):  # no secrets file at all
        return False


def _claims() -> dict[str, Any]:
    return {k: v for k, v in st.user.to_dict().items() if k != "tokens"}


def _providers() -> list[str | None]:
    """st.login's provider names: None for the default one (AUTH_* settings or a flat [auth] section)."""
    section = secrets_toml_auth()
    if _settings().auth_configured or section is None:
        return [None]
    named = [k for k, v in section.items() if isinstance(v, Mapping) and "client_id" in v]
    return named or [None]


def _sign_in_screen() -> None:
    st.title("Costlake")
    st.markdown("This Costlake is shared: sign in with your organisation's account to see its cloud cost.")
    for provider in _providers():
        label = "Sign in" if provider is None else f"Sign in with {provider}"
        if st.button(label, type="primary", key=f"auth_login_{provider or 'default'}"):
            st.login() if provider is None else st.login(provider)


def _refused_screen(claims: Mapping[str, Any]) -> None:
    who = claims.get("email") or claims.get("preferred_username") or claims.get("sub") or "this account"
    st.title("No access to Costlake")
    st.warning(
        f"You are signed in as **{who}**, but this account has no Costlake role. Ask an admin to add your "
        "address or domain to AUTH_VIEWERS, AUTH_EDITORS or AUTH_ADMINS, or to give you a group that "
        "AUTH_ROLE_MAP maps to a role.",
        icon="🚫",
    )
    if st.button("Sign out", key="auth_logout_refused"):
        st.logout()


def current_principal() -> Principal:
    """The principal of this script run; shows the sign-in or refusal screen and stops the script when
    there is none. Laptop mode (no sign-in configured) and AUTH_DISABLED=true: the one local user."""
    settings = _settings()
    current = auth_mode(settings)
    if current.mode in (LAPTOP, DISABLED):
        return local_principal()
    if not _streamlit_has_auth():
        # Fail closed: sign-in is configured but st.login cannot work, so nobody gets in.
        log.error("AUTH_* sign-in is configured but Streamlit has no [auth] secrets: not started by app.serve")
        st.title("Sign-in is not available")
        st.error(
            "Sign-in is configured through the AUTH_* settings, but this server was not given them: start "
            "Costlake with `python -m app.serve` (`make run`), which hands them to Streamlit, or put an [auth] "
            "section in .streamlit/secrets.toml.",
            icon="🔐",
        )
        st.stop()
    if not st.user.is_logged_in:
        _sign_in_screen()
        st.stop()
    claims = _claims()
    if session_expired(claims, settings.auth_max_session_hours):
        # Streamlit's cookie would keep the user in for 30 days; the deployment's limit wins.
        log.info("session of %s older than %s h: signing out", claims.get("email"), settings.auth_max_session_hours)
        st.logout()
        st.stop()
    principal = principal_from_claims(claims, RolePolicy.from_settings(settings))
    if principal is None:
        log.warning("signed-in %s has no role; refused", claims.get("email") or claims.get("sub"))
        _refused_screen(claims)
        st.stop()
    return principal


def sidebar(principal: Principal) -> None:
    """Who is signed in, with which role, and the logout button (nothing to show in laptop mode)."""
    if principal.kind != "user":
        return
    with st.sidebar:
        st.caption(f"Signed in as **{principal.email}** · {principal.role.name}")
        if st.button("Sign out", key="auth_logout"):
            st.logout()


def refused(exc: PermissionDenied, *, target: str | None = None) -> None:
    """A write the backend refused: say which role it needs, and audit the attempt."""
    log.warning("%s (%s)", exc, exc.principal.who)
    try:
        from app.context import get_owner

        record_now(get_owner(), exc.principal, exc.action, target, {"needed": exc.needed.name}, outcome="denied")
    except Exception:
        # The refusal stands either way; a lost audit row of a refused attempt is logged, not shown.
        log.exception("could not audit the refused %s by %s", exc.action, exc.principal.who)
    st.warning(f"{exc}.", icon="🔒")


def role_note(principal: Principal, role: Role, what: str) -> None:
    """A caption where controls are hidden: what the user would need, so nobody wonders where they went."""
    if not principal.can(role):
        st.caption(f"🔒 {what} needs the {role.name} role; you are {principal.role.name}.")
