"""harness.evaluate's paired comparison: the difference of two models' accuracies on the same prompts,
with the standard error of the per-prompt differences."""
import math

import pytest

from harness.evaluate import paired_difference


def evaluation(rewards: dict) -> dict:
    return {"per_prompt": [{"row": row, "answer": "", "ground_truth": "", "reward": r} for row, r in rewards.items()]}


def test_paired_difference_is_the_mean_and_standard_error_of_per_prompt_differences():
    ours = evaluation({0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0, 4: 0.0, 9: 1.0})
    theirs = evaluation({4: 0.0, 3: 0.0, 2: 1.0, 1: 1.0, 0: 0.0, 7: 1.0})  # rows 9 and 7: answered by one only
    result = paired_difference(ours, theirs)
    differences = [1, 0, -1, 1, 0]  # rows 0..4
    mean = sum(differences) / 5
    se = math.sqrt(sum((d - mean) ** 2 for d in differences) / 4 / 5)
    assert result == pytest.approx({"accuracy": mean, "se": se, "prompts": 5})


def test_pairing_removes_the_prompts_own_difficulty():
    """Two models right on the same prompts but one: the unpaired error of two 50 % accuracies would be
    ~0.1 on 100 prompts; paired, only the one differing prompt counts."""
    theirs = evaluation({row: float(row % 2) for row in range(100)})
    ours = evaluation({row: 1.0 if row == 0 else float(row % 2) for row in range(100)})
    result = paired_difference(ours, theirs)
    assert result["accuracy"] == pytest.approx(0.01) and result["se"] == pytest.approx(0.01)


def test_too_few_shared_prompts_is_refused():
    with pytest.raises(ValueError, match="at least 2 shared prompts, got 1"):
        paired_difference(evaluation({0: 1.0, 1: 0.0}), evaluation({1: 1.0}))
