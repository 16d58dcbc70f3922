"""Sign-in and roles (issue 22): who acts, what their role allows, and the audit of what they did."""

from backend.auth.roles import (
    CLI,
    SCHEDULER,
    PermissionDenied,
    Principal,
    Role,
    local_principal,
    require,
    system_principal,
)

__all__ = [
    "CLI",
    "SCHEDULER",
    "PermissionDenied",
    "Principal",
    "Role",
    "local_principal",
    "require",
    "system_principal",
]
