"""The subscription-id rule gives one spelling per subscription, in silver (the decoder reads it) and for budgets and the agent."""

from __future__ import annotations

import pytest

from backend.medallion import silver
from backend.sources.ids import canonical_subscription_id

# Pure transforms: CI runs these on Sail and, with `--engine jvm`, on Apache Spark (`make test`).
pytestmark = pytest.mark.transform


GUID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
ARM = f"/subscriptions/{GUID}"

# raw value -> canonical form. Also run through the budgets migration (tests/mart/test_migrate.py).
CASES: list[tuple[str | None, str | None]] = [
    (GUID, ARM),  # Azure reports / Query API: bare guid
    (GUID.upper(), ARM),  # exports sometimes upper-case it
    (f"{{{GUID.upper()}}}", ARM),  # as copied from some portals and PowerShell
    (f"  {{ {GUID} }}\t", ARM),
    (f"{{{GUID}", ARM),  # one brace is tolerated, as silver does
    (f"{GUID}}}", ARM),
    (f"\n{GUID}\r\n", ARM),
    (f"{GUID}\u2028", ARM),  # Java's `$` also matches before a final line terminator
    (ARM, ARM),  # FOCUS: already the ARM id
    (f"/SUBSCRIPTIONS/{GUID.upper()}", ARM),
    (f"{ARM}/", ARM),
    (f" {ARM} ", ARM),
    (f"/subscriptions/{GUID.upper()}/resourceGroups/RG-A", ARM),
    (f"{ARM}/resourcegroups/rg\nx", ARM),
    # Not an Azure subscription: kept as sent, trimmed of spaces only (Spark's trim), nothing invented.
    (" 123456789012 ", "123456789012"),
    ("ABCD-EFGH-BG7-PGB", "ABCD-EFGH-BG7-PGB"),
    ("Production", "Production"),
    ("/subscriptions/sub-1", "/subscriptions/sub-1"),
    (f"subscriptions/{GUID}", f"subscriptions/{GUID}"),
    (f"{GUID}/resourceGroups/x", f"{GUID}/resourceGroups/x"),
    (f"{GUID}0", f"{GUID}0"),
    (f"{GUID}\u2028\u2028", f"{GUID}\u2028\u2028"),
    (f"{GUID.replace('a', 'g')}", f"{GUID.replace('a', 'g')}"),
    (f"\t{GUID}x\t", f"\t{GUID}x\t"),
    (f"/\u017fubscriptions/{GUID}", f"/\u017fubscriptions/{GUID}"),  # long s: Java folds case in ASCII only
    ("   ", None),
    ("", None),
    (None, None),
]


def test_python_rule_gives_the_canonical_form():
    assert [canonical_subscription_id(raw) for raw, _ in CASES] == [expected for _, expected in CASES]


def test_silver_keeps_the_canonical_form(spark):
    from tests.medallion.test_silver import staged

    valid = silver.validate(staged(spark, [{"sub_account_id": raw} for raw, _ in CASES]))
    says = [r["SubAccountId"] for r in valid.orderBy("row_index").collect()]
    assert says == [expected for _, expected in CASES], [
        (raw, got, want) for (raw, want), got in zip(CASES, says, strict=True) if got != want
    ]
