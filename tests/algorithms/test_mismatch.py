"""Training-inference mismatch correction: hand-computed weights and masks, metrics, defaults."""
import math

import pytest
import torch

from harness.algorithms import (DEFAULT_MISMATCH_CORRECTION, MISMATCH_CORRECTIONS, compute_policy_loss,
                                correct_mismatch)
from harness.algorithms.registry import UnknownNameError

# Sequence 0: rho = 0.5, 1, 3 (product 1.5, geometric mean 1.5^(1/3) = 1.145).
# Sequence 1: rho = 4, 4, padding (product 16, geometric mean 4).
RHO = torch.tensor([[0.5, 1.0, 3.0], [4.0, 4.0, 1.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ROLLOUT = -torch.rand(2, 3, generator=torch.Generator().manual_seed(0))
OLD = ROLLOUT + RHO.log()


def correct(mode, **extra):
    return correct_mismatch(old_log_prob=OLD, rollout_log_probs=ROLLOUT, response_mask=MASK, rollout_is=mode,
                            rollout_is_threshold=2.0, **extra)


def test_tis_is_on_by_default_and_truncates():
    assert DEFAULT_MISMATCH_CORRECTION == "tis"
    result = correct_mismatch(old_log_prob=OLD, rollout_log_probs=ROLLOUT, response_mask=MASK)
    assert torch.allclose(result.weights, torch.tensor([[0.5, 1.0, 2.0], [2.0, 2.0, 0.0]]), atol=1e-5)
    assert torch.equal(result.response_mask, MASK)


def test_sequence_and_masked_variants_by_hand():
    expected_weights = {
        "seq_tis": [[1.5, 1.5, 1.5], [2.0, 2.0, 0.0]],
        "token_mis": [[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]],  # bounds [1/2, 2]
        "seq_mis": [[1.5, 1.5, 1.5], [0.0, 0.0, 0.0]],
    }
    for mode, weights in expected_weights.items():
        result = correct(mode)
        assert torch.allclose(result.weights, torch.tensor(weights), atol=1e-5), mode
        assert torch.equal(result.response_mask, MASK), mode
    expected_masks = {
        "token_rs": [[1, 1, 0], [0, 0, 0]],
        "seq_rs": [[1, 1, 1], [0, 0, 0]],
        "geo_rs": [[1, 1, 1], [0, 0, 0]],
    }
    for mode, mask in expected_masks.items():
        result = correct(mode)
        assert result.weights is None and result.response_mask.tolist() == mask, mode
    # A sequence of 100 tokens each at rho = 1.05: the product (131) is rejected, the geometric mean kept.
    long_old = torch.full((1, 100), math.log(1.05))
    ones = torch.ones(1, 100)
    kwargs = dict(old_log_prob=long_old, rollout_log_probs=torch.zeros(1, 100), response_mask=ones)
    assert correct_mismatch(rollout_is="seq_rs", **kwargs).response_mask.sum() == 0
    assert correct_mismatch(rollout_is="geo_rs", **kwargs).response_mask.sum() == 100


def test_metrics_by_hand():
    metrics = correct("token_rs").metrics
    deltas = [math.log(0.5), 0.0, math.log(3.0), math.log(4.0), math.log(4.0)]
    assert metrics["mismatch/abs_log_prob_diff_mean"].item() == pytest.approx(sum(map(abs, deltas)) / 5, abs=1e-5)
    assert metrics["mismatch/abs_log_prob_diff_max"].item() == pytest.approx(math.log(4.0), abs=1e-5)
    assert metrics["mismatch/masked_fraction"].item() == pytest.approx(3 / 5)
    # k3 of KL(rollout || old): with r = 1/rho, mean of r - 1 - log r over the 5 tokens.
    k3 = sum(1 / math.exp(d) - 1 + d for d in deltas) / 5
    assert metrics["mismatch/k3_kl"].item() == pytest.approx(k3, abs=1e-5)
    assert correct("token_mis").metrics["mismatch/masked_fraction"].item() == pytest.approx(3 / 5)


def test_matching_engines_change_nothing():
    for mode in MISMATCH_CORRECTIONS.names():
        result = correct_mismatch(old_log_prob=ROLLOUT, rollout_log_probs=ROLLOUT, response_mask=MASK,
                                  rollout_is=mode)
        assert torch.equal(result.response_mask, MASK), mode
        if result.weights is not None:
            assert torch.equal(result.weights, MASK.float()), mode
        assert result.metrics["mismatch/masked_fraction"].item() == 0.0
        assert result.metrics["mismatch/abs_log_prob_diff_max"].item() == 0.0


def test_without_rollout_log_probs_nothing_is_corrected():
    result = correct_mismatch(old_log_prob=OLD, rollout_log_probs=None, response_mask=MASK)
    assert result.weights is None and result.response_mask is MASK and result.metrics == {}


def test_weights_feed_the_policy_loss():
    result = correct("tis")
    loss, _ = compute_policy_loss("vanilla", old_log_prob=OLD, log_prob=OLD, advantages=torch.ones(2, 3),
                                  response_mask=result.response_mask, rollout_is_weights=result.weights)
    assert loss.item() == pytest.approx(-(0.5 + 1 + 2 + 2 + 2) / 5, abs=1e-5)


def test_bad_input():
    with pytest.raises(UnknownNameError, match="'tiss'; registered: none, tis, seq_tis"):
        correct("tiss")
    with pytest.raises(ValueError, match="rollout_is_threshold must be > 0"):
        correct_mismatch(old_log_prob=OLD, rollout_log_probs=ROLLOUT, response_mask=MASK, rollout_is_threshold=0)
    broken = ROLLOUT.clone()
    broken[1, 0] = float("nan")
    with pytest.raises(ValueError, match="rollout_log_probs .* at sample 1, token 0"):
        correct_mismatch(old_log_prob=OLD, rollout_log_probs=broken, response_mask=MASK)
