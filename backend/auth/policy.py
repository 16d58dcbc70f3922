"""Role resolution: a signed-in user's role from the allow-lists in settings and the ID token's roles claim."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.auth.roles import Principal, Role
from backend.config import Settings


@dataclass(frozen=True)
class RolePolicy:
    """Allow-lists (addresses or @domains per role) and the claim whose values name roles."""

    admins: tuple[str, ...] = ()
    editors: tuple[str, ...] = ()
    viewers: tuple[str, ...] = ()
    roles_claim: str = "roles"
    # Claim value (case-folded) -> role; without an entry a value that is a role's name is that role.
    role_map: Mapping[str, Role] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> RolePolicy:
        role_map: dict[str, Role] = {}
        for pair in settings.auth_role_map:
            value, sep, role = pair.rpartition("=")
            if not sep or not value.strip():
                raise ValueError(f"AUTH_ROLE_MAP entry {pair!r} is not <claim value>=<role>")
            role_map[value.strip().casefold()] = Role.parse(role)
        return cls(
            admins=_entries(settings.auth_admins),
            editors=_entries(settings.auth_editors),
            viewers=_entries(settings.auth_viewers),
            roles_claim=settings.auth_roles_claim.strip(),
            role_map=role_map,
        )

    def role_for(self, email: str | None, claims: Mapping[str, Any]) -> Role | None:
        """The highest role any list or claim value gives; None = not allowed in at all."""
        found = [role for role in (self._listed(email), self._claimed(claims)) if role is not None]
        return max(found) if found else None

    def _listed(self, email: str | None) -> Role | None:
        if not email or "@" not in email:
            return None
        address = email.strip().casefold()
        domain = "@" + address.rsplit("@", 1)[1]
        for role, entries in ((Role.admin, self.admins), (Role.editor, self.editors), (Role.viewer, self.viewers)):
            if address in entries or domain in entries:
                return role
        return None

    def _claimed(self, claims: Mapping[str, Any]) -> Role | None:
        if not self.roles_claim:
            return None
        roles = []
        for value in _claim_values(claims.get(self.roles_claim)):
            key = value.strip().casefold()
            if key in self.role_map:
                roles.append(self.role_map[key])
            elif key in Role.__members__:
                roles.append(Role[key])
        return max(roles) if roles else None


def _entries(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(v.strip().casefold() for v in values if v.strip())


def _claim_values(value: Any) -> list[str]:
    # Providers send a list (Entra ID, Keycloak, Okta) or, for one value, sometimes a bare or
    # space-separated string.
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return []


def principal_from_claims(claims: Mapping[str, Any], policy: RolePolicy) -> Principal | None:
    """The signed-in user as a Principal, or None when neither a list nor the claim lets them in.

    The allow-lists match the `email` claim only, and not when the provider says email_verified=false:
    preferred_username (Entra ID's UPN) can be changed by its holder, so it only names the user."""
    email = str(claims.get("email") or "").strip()
    listed = "" if claims.get("email_verified") is False else email
    role = policy.role_for(listed, claims)
    if role is None:
        return None
    who = email or str(claims.get("preferred_username") or claims.get("sub") or "")
    return Principal(email=who, name=str(claims.get("name") or who or "signed-in user"), role=role, kind="user")
