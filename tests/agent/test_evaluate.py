"""The evaluation's scorer, and the rule-based model's execution accuracy on the question set."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from bench.agent_evaluation import ALL_CASES, CASES, HELD_OUT, PARAPHRASES, matches, run_cases


def test_matcher():
    ref = pd.DataFrame([("Storage", 10.0), ("VMs", 20.004)])
    assert matches(ref, pd.DataFrame({"service": ["VMs", "Storage"], "currency": ["EUR", "EUR"], "cost": [20.0, 10.0]}))
    assert not matches(ref, pd.DataFrame({"service": ["VMs"], "cost": [20.0]}))
    assert not matches(ref, pd.DataFrame({"service": ["VMs", "Storage"], "cost": [10.0, 20.0]}))  # swapped values
    assert matches(ref.head(1), pd.DataFrame({"s": ["VMs", "Storage"], "c": [20.0, 10.0]}), mode="contains")
    assert not matches(ref.head(1), pd.DataFrame({"s": ["VMs", "Storage"], "c": [20.0, 10.0]}))
    assert not matches(ref, None)


def test_the_question_set_has_paraphrases_of_every_intent():
    assert len(ALL_CASES) >= 80 and len(CASES) >= 30
    assert min(Counter(c.intent for c in PARAPHRASES).values()) >= 3
    assert {c.intent for c in HELD_OUT} == {c.intent for c in PARAPHRASES}
    assert len({c.question for c in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.slow
def test_rule_based_model_scores_on_the_question_set(rule_agent):
    results = run_cases(rule_agent, rule_agent.ctx.engine)

    def score(kind):
        rs = [r for r in results if r.kind == kind]
        return sum(r.ok for r in rs) / len(rs)

    # The demo mart here carries the planted injection resource too; the scores are the same as without it.
    failed = [r.question for r in results if not r.ok]
    assert score("pattern") >= 0.95 and score("paraphrase") >= 0.95, failed
    # Never tuned against: a floor that catches regressions, not a target (84.6% when it was written).
    assert score("held-out") >= 0.75, failed
