"""Roles: the order, require()'s refusal naming the role needed, and role resolution from lists and claims."""

from __future__ import annotations

import pytest

from backend.auth import PermissionDenied, Principal, Role, local_principal, require, system_principal
from backend.auth.policy import RolePolicy, principal_from_claims
from tests.auth.principals import ADMIN, EDITOR, VIEWER
from tests.conftest import make_settings


def test_roles_are_ordered_and_require_names_the_role_needed():
    assert Role.viewer < Role.editor < Role.admin
    require(ADMIN, Role.editor, "Creating a budget")  # a higher role may do what a lower one may
    require(EDITOR, Role.editor, "Creating a budget")
    with pytest.raises(PermissionDenied, match=r"^Running the pipeline needs the admin role; you are viewer$") as exc:
        require(VIEWER, Role.admin, "Running the pipeline")
    assert exc.value.needed is Role.admin and exc.value.principal is VIEWER
    with pytest.raises(PermissionDenied, match="needs the admin role; you are editor"):
        require(EDITOR, Role.admin, "Editing a schedule")
    assert isinstance(exc.value, PermissionError)


def test_laptop_and_system_principals_are_admins_named_for_the_audit():
    local = local_principal()
    assert local.role is Role.admin and local.kind == "local" and local.who.startswith("local:")
    assert system_principal("scheduler").who == "system:scheduler"
    assert EDITOR.who == "editor@example.com"
    assert Role.parse(" Editor ") is Role.editor
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        Role.parse("owner")


def _policy(tmp_path, **values) -> RolePolicy:
    return RolePolicy.from_settings(make_settings(tmp_path, **values))


def test_allow_lists_match_addresses_and_domains_case_blind_highest_wins(tmp_path):
    policy = _policy(
        tmp_path,
        auth_admins="Boss@Example.com",
        auth_editors="@finops.example.com, eve@example.com",
        auth_viewers="@example.com",
    )
    assert policy.role_for("boss@example.COM", {}) is Role.admin
    assert policy.role_for("x@finops.example.com", {}) is Role.editor
    assert policy.role_for("eve@example.com", {}) is Role.editor  # on two lists: the higher role
    assert policy.role_for("anyone@example.com", {}) is Role.viewer
    # A domain entry is the whole domain, not a suffix of another one.
    assert policy.role_for("mallory@notexample.com", {}) is None
    assert policy.role_for("x@sub.example.com", {}) is None
    assert policy.role_for("", {}) is None and policy.role_for(None, {}) is None


def test_the_roles_claim_maps_through_the_role_map_or_names_roles_itself(tmp_path):
    policy = _policy(
        tmp_path,
        auth_roles_claim="groups",
        auth_role_map="3f1c-admins=admin, FinOps=editor",
    )
    assert policy.role_for("", {"groups": ["other", "3f1c-admins"]}) is Role.admin
    assert policy.role_for("", {"groups": ["finops"]}) is Role.editor
    assert policy.role_for("", {"groups": "viewer"}) is Role.viewer  # a bare string is one value
    assert policy.role_for("", {"groups": ["nobody"]}) is None
    assert policy.role_for("", {"roles": ["admin"]}) is None  # only the configured claim counts
    # The list and the claim together: the higher role.
    both = _policy(tmp_path, auth_viewers="ana@example.com", auth_roles_claim="roles")
    assert both.role_for("ana@example.com", {"roles": ["editor"]}) is Role.editor
    with pytest.raises(ValueError, match="not <claim value>=<role>"):
        _policy(tmp_path, auth_role_map="admins")
    with pytest.raises(ValueError, match="unknown role 'root'"):
        _policy(tmp_path, auth_role_map="admins=root")


def test_principal_from_claims_refuses_unlisted_and_unverified_addresses(tmp_path):
    policy = _policy(tmp_path, auth_editors="ed@example.com")
    ed = principal_from_claims({"email": "ed@example.com", "name": "Ed", "sub": "1"}, policy)
    assert ed == Principal(email="ed@example.com", name="Ed", role=Role.editor, kind="user")
    assert principal_from_claims({"email": "out@example.com", "sub": "2"}, policy) is None
    # An address the provider has not verified could be anyone's: the list does not apply.
    assert principal_from_claims({"email": "ed@example.com", "email_verified": False}, policy) is None
    # preferred_username names the user but never matches a list (its holder can change it).
    assert principal_from_claims({"preferred_username": "ed@example.com"}, policy) is None
    by_claim = principal_from_claims({"preferred_username": "kim@corp", "roles": ["viewer"]}, policy)
    assert by_claim is not None and by_claim.email == "kim@corp" and by_claim.role is Role.viewer
