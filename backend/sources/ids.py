"""Azure subscription ids in the one form the lake and the mart keep: `/subscriptions/<lower-case guid>`."""

from __future__ import annotations

import re

# Silver reads every SubAccountId through this (backend/medallion/parse.derive, once per distinct value),
# and so do values that never pass through the lake (a budget's scope typed into a form);
# tests/medallion/test_subscription_ids.py runs one table of cases through both. The rule was first
# Spark's (Java's regex engine), so re.ASCII keeps `\s` and case folding ASCII as Java does, and `_END`
# stands for Java's `$`, which also matches before one final line terminator.
_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_END = r"(?:\r\n|[\n\r\u0085\u2028\u2029])?\Z"
_SUBSCRIPTION_GUID = re.compile(
    rf"^\s*(?:/subscriptions/(?={_GUID}(?:/.*)?\s*{_END})|\{{?\s*(?={_GUID}\s*\}}?\s*{_END}))({_GUID})",
    re.IGNORECASE | re.DOTALL | re.ASCII,
)
SUBSCRIPTION_PREFIX = "/subscriptions/"


def canonical_subscription_id(value: str | None) -> str | None:
    """`/subscriptions/<lower-case guid>` for a bare, braced or any-case guid or an ARM path under a subscription;
    any other id (an AWS account, a billing profile, a name) is kept, trimmed of spaces. Blank -> None.

    FOCUS files spell a subscription as the ARM path, Azure reports as the bare guid; silver keeps the
    former, so a value compared with mart.dim_subscription.subscription_id must be spelled the same.
    """
    if value is None:
        return None
    found = _SUBSCRIPTION_GUID.match(value)
    if found:
        return SUBSCRIPTION_PREFIX + found.group(1).lower()
    # Spark's trim strips only the space character, not tabs or newlines: keep to it.
    return value.strip(" ") or None
