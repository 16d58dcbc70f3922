"""Postgres' spelling of the subscription-id rule, for migrations that rewrite ids already stored in the mart.

backend/sources/ids.py is the rule in Python (silver reads every id through it);
this is it in Postgres' regex dialect: `[ \\t\\n\\v\\f\\r]` for Java's ASCII `\\s`, and an optional final line
terminator before the end, as Java's `$` allows. tests/mart/test_migrate.py checks it against the Python
cases. Migrations 0008 and 0009 read it, so it is frozen: a changed rule needs a new constant and a new
migration, or those two would no longer say what they did when they ran.
"""

from __future__ import annotations

_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_WS = r"[ \t\n\v\f\r]"
_END = r"(?:\r\n|[\n\r\u0085\u2028\u2029])?$"
SUBSCRIPTION_GUID = (
    rf"^{_WS}*(?:/subscriptions/(?={_GUID}(?:/.*)?{_WS}*{_END})|\{{?{_WS}*(?={_GUID}{_WS}*\}}?{_WS}*{_END}))({_GUID})"
)
PATTERN_PARAM = "subscription_pattern"


def canonical_subscription_sql(column: str) -> str:
    """SQL for `column` as `/subscriptions/<lower-case guid>`, NULL when it holds no subscription guid.

    The statement must bind `PATTERN_PARAM` to `SUBSCRIPTION_GUID`; a NULL result means "leave the
    value as stored" (a name, a non-Azure id), as the Python rule keeps those.
    """
    return f"'/subscriptions/' || lower((regexp_match({column}, :{PATTERN_PARAM}, 'i'))[1])"
