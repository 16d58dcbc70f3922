"""Who may do what: the three roles, the principal acting, and `require`, which every write calls first."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    """Ordered: each role may do everything the one below it may."""

    viewer = 1  # reads every page, asks the agent
    editor = 2  # budgets, anomaly feedback, uploads
    admin = 3  # runs, schedules, settings, source credentials, demo removal

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown role {value!r}: use viewer, editor or admin") from None


class PermissionDenied(PermissionError):  # noqa: N818 - the name the UI and the issue use: a refusal, not a fault
    """An action the principal's role does not allow; the message names the role it needs."""

    def __init__(self, action: str, needed: Role, principal: Principal) -> None:
        self.action, self.needed, self.principal = action, needed, principal
        super().__init__(f"{action} needs the {needed.name} role; you are {principal.role.name}")


@dataclass(frozen=True)
class Principal:
    """Whoever acts: a signed-in user, the single local user of a laptop run, or the process itself.

    kind is "user" (signed in through OIDC), "local" (laptop mode: no sign-in, one person, every right)
    or "system" (the scheduler, the command line, the app's own first demo load)."""

    email: str
    name: str
    role: Role
    kind: str = "user"

    @property
    def who(self) -> str:
        """What the audit records as the actor."""
        return self.email if self.kind == "user" else f"{self.kind}:{self.name}"

    def can(self, role: Role) -> bool:
        return self.role >= role


def local_principal() -> Principal:
    """The one user of a laptop run (no sign-in configured): an admin, named after the OS account."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers): still one person
        user = "local"
    return Principal(email="", name=user, role=Role.admin, kind="local")


def system_principal(name: str) -> Principal:
    """The process acting on its own behalf: the scheduler's jobs, the CLI, the first demo load."""
    return Principal(email="", name=name, role=Role.admin, kind="system")


SCHEDULER = system_principal("scheduler")
CLI = system_principal("cli")


def require(principal: Principal, role: Role, action: str) -> None:
    """Raise PermissionDenied("<action> needs the <role> role; you are <role>") unless the principal may."""
    if not principal.can(role):
        raise PermissionDenied(action, role, principal)
