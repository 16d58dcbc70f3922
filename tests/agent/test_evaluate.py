"""The evaluation's scorer, and the rule-based model's execution accuracy on the question set."""

from __future__ import annotations

import pandas as pd
import pytest

from backend.agent.evaluate import CASES, matches, run_cases


def test_matcher():
    ref = pd.DataFrame([("Storage", 10.0), ("VMs", 20.004)])
    assert matches(ref, pd.DataFrame({"service": ["VMs", "Storage"], "currency": ["EUR", "EUR"], "cost": [20.0, 10.0]}))
    assert not matches(ref, pd.DataFrame({"service": ["VMs"], "cost": [20.0]}))
    assert not matches(ref, pd.DataFrame({"service": ["VMs", "Storage"], "cost": [10.0, 20.0]}))  # swapped values
    assert matches(ref.head(1), pd.DataFrame({"s": ["VMs", "Storage"], "c": [20.0, 10.0]}), mode="contains")
    assert not matches(ref.head(1), pd.DataFrame({"s": ["VMs", "Storage"], "c": [20.0, 10.0]}))
    assert not matches(ref, None)


@pytest.mark.slow
def test_rule_based_model_scores_on_the_question_set(rule_agent):
    assert len(CASES) >= 30
    results = run_cases(rule_agent, rule_agent.ctx.engine)
    score = sum(r.ok for r in results) / len(results)
    # The demo mart here carries the planted injection resource too; the score is the same as without it.
    assert score >= 0.85, [r for r in results if not r.ok]
