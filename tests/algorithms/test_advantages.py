"""Advantage estimators: hand-computed values, the papers' formulas, and properties.

Rewards are outcome rewards placed on each sample's last valid token, as the reward room does.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from harness.algorithms import compute_advantage, discounted_returns, masked_whiten
from harness.algorithms.registry import UnknownNameError
from harness.algorithms.tensor_ops import check_finite

from . import reference

SETTINGS = settings(max_examples=25, deadline=None)


def outcome_batch(scores, lengths, width=None):
    """token_level_rewards with score_i on the last of lengths_i valid tokens, and the mask."""
    width = width or max(lengths)
    mask = torch.zeros(len(scores), width)
    rewards = torch.zeros(len(scores), width)
    for i, (score, length) in enumerate(zip(scores, lengths)):
        mask[i, :length] = 1
        rewards[i, length - 1] = score
    return rewards, mask


def per_sample(advantages, mask):
    """The constant per-sample advantage of an outcome estimator (checked constant over tokens)."""
    first = advantages[:, 0]
    assert torch.allclose(advantages, first.unsqueeze(-1) * mask, atol=1e-6)
    return first


# ---- hand-computed values -------------------------------------------------------------------

def test_grpo_by_hand():
    # Group 7: rewards 0, 1, 5 -> mean 2, deviations -2, -1, 3, unbiased var (4+1+9)/2 = 7.
    # Group 3: rewards 2, 6 -> mean 4, deviations -2, 2, std sqrt(8) = 2.8284.
    rewards, mask = outcome_batch([0, 2, 1, 5, 6], [2, 1, 3, 2, 1])
    group_index = torch.tensor([7, 3, 7, 7, 3])
    advantages, returns = compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask,
                                            group_index=group_index)
    std7, std3 = math.sqrt(7), math.sqrt(8)
    expected = torch.tensor([-2 / std7, -2 / std3, -1 / std7, 3 / std7, 2 / std3])
    assert torch.allclose(per_sample(advantages, mask), expected, atol=1e-5)
    assert torch.equal(advantages, returns)
    assert torch.all(advantages[mask == 0] == 0)


def test_drgrpo_keeps_raw_deviation():
    rewards, mask = outcome_batch([0, 1, 5], [1, 2, 3])
    advantages, _ = compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask,
                                      group_index=torch.tensor([0, 0, 0]), norm_adv_by_std_in_grpo=False)
    assert torch.allclose(per_sample(advantages, mask), torch.tensor([-2.0, -1.0, 3.0]))


def test_grpo_accepts_uid_strings():
    rewards, mask = outcome_batch([0, 1, 5, 2], [1, 1, 1, 1])
    by_string, _ = compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask,
                                     group_index=["a", "b", "a", "b"])
    by_int, _ = compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask,
                                  group_index=torch.tensor([1, 0, 1, 0]))
    assert torch.equal(by_string, by_int)


def test_rloo_by_hand():
    # Baselines: (1+5)/2 = 3, (0+5)/2 = 2.5, (0+1)/2 = 0.5.
    rewards, mask = outcome_batch([0, 1, 5], [3, 1, 2])
    advantages, _ = compute_advantage("rloo", token_level_rewards=rewards, response_mask=mask,
                                      group_index=torch.tensor([4, 4, 4]))
    assert torch.allclose(per_sample(advantages, mask), torch.tensor([-3.0, -1.5, 4.5]))


def test_opo_by_hand():
    # Lengths 1, 2, 3: baseline (1*0 + 2*1 + 3*5) / 6 = 17/6.
    rewards, mask = outcome_batch([0, 1, 5], [1, 2, 3])
    advantages, _ = compute_advantage("opo", token_level_rewards=rewards, response_mask=mask,
                                      group_index=torch.tensor([0, 0, 0]))
    assert torch.allclose(per_sample(advantages, mask), torch.tensor([0, 1, 5]) - 17 / 6)


def test_gpg_by_hand():
    # Group 0 (0, 1, 5) is informative, group 1 (1, 1) is not: alpha = B / B_valid = 5 / 3.
    rewards, mask = outcome_batch([0, 1, 5, 1, 1], [1, 1, 1, 1, 1])
    advantages, _ = compute_advantage("gpg", token_level_rewards=rewards, response_mask=mask,
                                      group_index=torch.tensor([0, 0, 0, 1, 1]))
    expected = torch.tensor([-2.0, -1.0, 3.0, 0.0, 0.0]) * 5 / 3
    assert torch.allclose(per_sample(advantages, mask), expected)


@pytest.mark.parametrize("rewards, mask, expected", [
    # rewards 1, 0, 2 with gamma 0.5: G2 = 2, G1 = 0 + 0.5*2 = 1, G0 = 1 + 0.5*1 = 1.5.
    ([[1.0, 0.0, 2.0, 9.0]], [[1, 1, 1, 0]], [[1.5, 1.0, 2.0, 0.0]]),
    # Turn 1 (token 0), tool output (token 1, masked: its reward 5 is not the policy's), turn 2
    # (tokens 2, 3): G3 = 4, G2 = 0 + 0.5*4 = 2, the return passes the tool output undiscounted,
    # G0 = 1 + 0.5*2 = 2 (resetting it there would give G0 = 1).
    ([[1.0, 5.0, 0.0, 4.0]], [[1, 0, 1, 1]], [[2.0, 0.0, 2.0, 4.0]]),
])
def test_reinforce_plus_plus_returns_by_hand(rewards, mask, expected):
    rewards, mask = torch.tensor(rewards), torch.tensor(mask)
    advantages, returns = compute_advantage("reinforce_plus_plus", token_level_rewards=rewards,
                                            response_mask=mask, gamma=0.5)
    assert torch.allclose(returns, torch.tensor(expected))
    assert torch.allclose(advantages, masked_whiten(returns, mask))


def test_masked_whiten_by_hand():
    # Valid 1, 2, 3: mean 2, unbiased var 1 -> -1, 0, 1 (padding 100 ignored, output 0).
    values = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert torch.allclose(masked_whiten(values, mask), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-6)


def test_reinforce_plus_plus_baseline_by_hand():
    # Group 0 (1, 3): mean 2 -> -1, 1. Sample 2 is alone: no baseline, its reward 5 stays (as verl).
    # Valid tokens -1 | 1, 1 | 5: mean 1.5, deviations -2.5, -0.5, -0.5, 3.5, unbiased var 19/3.
    # The returns are the advantages (verl returns the whitened values for both).
    rewards, mask = outcome_batch([1, 3, 5], [1, 2, 1])
    advantages, returns = compute_advantage("reinforce_plus_plus_baseline", token_level_rewards=rewards,
                                            response_mask=mask, group_index=torch.tensor([0, 0, 1]))
    std = math.sqrt(19 / 3)
    expected = torch.tensor([[-2.5 / std, 0.0], [-0.5 / std, -0.5 / std], [3.5 / std, 0.0]])
    assert torch.allclose(advantages, expected, atol=1e-6)
    assert torch.equal(returns, advantages)


def test_outcome_baselines_of_a_sample_alone_are_zero():
    # OPO: group 0 (lengths 1, 2; rewards 0, 1) has baseline 2/3; sample 2 is alone: baseline 0.
    rewards, mask = outcome_batch([0, 1, 5], [1, 2, 1])
    advantages, _ = compute_advantage("opo", token_level_rewards=rewards, response_mask=mask,
                                      group_index=torch.tensor([0, 0, 1]))
    assert torch.allclose(per_sample(advantages, mask), torch.tensor([-2 / 3, 1 / 3, 5.0]))


def test_remax_carries_across_a_masked_stretch_by_hand():
    # Turn 1 (token 0), tool output (token 1, its reward 5 ignored), turn 2 (tokens 2, 3) ending on
    # reward 4, greedy reward 1: every valid token sees the final 4, turn 1 included.
    rewards = torch.tensor([[1.0, 5.0, 0.0, 4.0]])
    advantages, returns = compute_advantage("remax", token_level_rewards=rewards,
                                            response_mask=torch.tensor([[1.0, 0.0, 1.0, 1.0]]),
                                            reward_baselines=torch.tensor([1.0]))
    assert torch.allclose(returns, torch.tensor([[5.0, 0.0, 4.0, 4.0]]))
    assert torch.allclose(advantages, torch.tensor([[4.0, 0.0, 3.0, 3.0]]))


def test_gae_skips_a_masked_stretch_by_hand():
    # test_gae_by_hand's sequence with a tool output (token 1, value 8, reward 9) inserted after
    # token 0: it is skipped, so the valid tokens keep A = 0.11425, 0.165, 0.3.
    rewards = torch.tensor([[0.0, 9.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 8.0, 0.6, 0.7]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    telescoped = torch.tensor([[0.11425, 0.0, 0.165, 0.3]])
    # lam ~ 0 (the TD errors summed as they are): A = delta + 0.9 lam A_next, deltas 0.04, 0.03, 0.3.
    td_errors = torch.tensor([[0.04, 0.0, 0.03, 0.3]]) + 0.9e-7 * torch.tensor([[0.03, 0.0, 0.3, 0.0]])
    for lam, raw in [(0.5, telescoped), (1e-7, td_errors)]:
        advantages, returns = compute_advantage("gae", token_level_rewards=rewards, values=values,
                                                response_mask=mask, gamma=0.9, lam=lam)
        assert torch.allclose(returns, (raw + values) * mask, atol=1e-6), lam
        assert torch.allclose(advantages, masked_whiten(raw, mask), atol=1e-5), lam


def test_remax_by_hand():
    # Reward-to-go of a final reward 3 is 3 on every token; the greedy response scored 1.
    rewards, mask = outcome_batch([3.0, 0.0], [3, 2])
    advantages, returns = compute_advantage("remax", token_level_rewards=rewards, response_mask=mask,
                                            reward_baselines=torch.tensor([1.0, 0.5]))
    assert torch.allclose(returns, torch.tensor([[3.0, 3.0, 3.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(advantages, torch.tensor([[2.0, 2.0, 2.0], [-0.5, -0.5, 0.0]]))


def test_gae_by_hand():
    # gamma 0.9, lam 0.5; rewards 0, 0, 1; values 0.5, 0.6, 0.7:
    # delta = 0.9*0.6-0.5 = 0.04, 0.9*0.7-0.6 = 0.03, 1-0.7 = 0.3;
    # A2 = 0.3, A1 = 0.03 + 0.45*0.3 = 0.165, A0 = 0.04 + 0.45*0.165 = 0.11425; returns = A + V.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 4.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    advantages, returns = compute_advantage("gae", token_level_rewards=rewards, values=values,
                                            response_mask=mask, gamma=0.9, lam=0.5)
    raw = torch.tensor([[0.11425, 0.165, 0.3, 0.0]])
    assert torch.allclose(returns, torch.tensor([[0.61425, 0.765, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(advantages, masked_whiten(raw, mask), atol=1e-5)


def test_prime_by_hand():
    # beta 1: process rewards [1, 3] (mean 2) and [0, 2] (mean 1); outcomes 1 and 0; n = 2.
    # Process leave-one-out: [1-1, 3-1] = [0, 2] and [0-2, 2-2] = [-2, 0].
    # Outcome leave-one-out: 1 - 0 = 1 and 0 - 1 = -1, on the last token -> [0, 3] and [-2, -1].
    # Reward-to-go: [3, 3] and [-3, -1]; advantages are those whitened.
    prm_log_probs = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    rewards, mask = outcome_batch([1.0, 0.0], [2, 2])
    advantages, returns = compute_advantage(
        "prime", token_level_rewards=rewards, response_mask=mask, group_index=torch.tensor([0, 0]),
        prm_log_probs=prm_log_probs, prm_ref_log_probs=torch.zeros(2, 2), prime_beta=1.0,
        reward_dpo_coef=1.0, reward_gt_coef=1.0)
    assert torch.allclose(returns, torch.tensor([[3.0, 3.0], [-3.0, -1.0]]))
    assert torch.allclose(advantages, masked_whiten(returns, mask))


# ---- the papers' formulas on random inputs --------------------------------------------------

@st.composite
def grouped_batches(draw, min_group=2):
    sizes = draw(st.lists(st.integers(min_group, 5), min_size=1, max_size=5))
    ids = draw(st.permutations([i * 13 + 5 for i in range(len(sizes))]))  # arbitrary, non-dense ids
    group_index = [gid for gid, size in zip(ids, sizes) for _ in range(size)]
    order = draw(st.permutations(range(len(group_index))))  # groups interleaved, not contiguous
    group_index = torch.tensor([group_index[k] for k in order])
    batch = len(group_index)
    width = draw(st.integers(1, 6))
    lengths = torch.tensor(draw(st.lists(st.integers(1, width), min_size=batch, max_size=batch)))
    mask = (torch.arange(width) < lengths.unsqueeze(-1)).float()
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(batch, width, generator=generator) * mask
    values = torch.randn(batch, width, generator=generator)
    return rewards, values, mask, group_index


@SETTINGS
@given(grouped_batches())
def test_grpo_rloo_opo_match_paper_formulas(batch):
    rewards, _, mask, group_index = batch
    inputs = dict(token_level_rewards=rewards, response_mask=mask, group_index=group_index)
    for name, formula in [("grpo", reference.grpo), ("rloo", reference.rloo), ("opo", reference.opo)]:
        advantages, _ = compute_advantage(name, **inputs)
        expected = torch.tensor(formula(rewards, mask, group_index.tolist()), dtype=torch.float32)
        assert torch.allclose(per_sample(advantages, mask), expected, atol=1e-3, rtol=1e-3), name
    drgrpo, _ = compute_advantage("grpo", norm_adv_by_std_in_grpo=False, **inputs)
    expected = torch.tensor(reference.grpo(rewards, mask, group_index.tolist(), norm_by_std=False))
    assert torch.allclose(per_sample(drgrpo, mask), expected.float(), atol=1e-5)


@SETTINGS
@given(grouped_batches(), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_gae_matches_paper_formula(batch, gamma, lam):
    rewards, values, mask, _ = batch
    if mask.shape[1] > 2:
        mask[:, 1] = 0  # a hole inside the response: its value and TD error are skipped
    advantages, returns = compute_advantage("gae", token_level_rewards=rewards, values=values,
                                            response_mask=mask, gamma=gamma, lam=lam)
    raw, expected_returns = reference.gae_returns(rewards, values, mask, gamma, lam)
    assert torch.allclose(returns, expected_returns, atol=1e-4)
    assert torch.allclose(advantages, masked_whiten(raw, mask), atol=1e-3)


@st.composite
def long_masks_with_holes(draw):
    """Responses longer than one discounting segment, each with masked stretches inside."""
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 90))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    lengths = torch.randint(0, width + 1, (rows,), generator=generator)
    mask = (torch.arange(width) < lengths.unsqueeze(-1)) & (torch.rand(rows, width, generator=generator) > 0.3)
    return torch.randn(rows, width, generator=generator), torch.randn(rows, width, generator=generator), mask.float()


@settings(max_examples=40, deadline=None)
@given(long_masks_with_holes(), st.sampled_from([0.0, 1e-7, 0.1, 0.5, 0.95, 1.0]))
def test_discounted_returns_match_the_loop(batch, gamma):
    # gamma 0.1 and 1e-7 split 90 columns into segments of 26 and 3 (discount^segment >= e^-60).
    rewards, _, mask = batch
    expected = reference.discounted_returns(rewards, mask, gamma)
    assert torch.allclose(discounted_returns(rewards, mask, gamma), expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(long_masks_with_holes(), st.sampled_from([(1.0, 1.0), (0.99, 0.95), (0.9, 0.3), (1.0, 0.0), (0.8, 1e-8)]))
def test_gae_on_long_responses_with_holes_matches_the_paper(batch, gamma_lam):
    rewards, values, mask = batch
    gamma, lam = gamma_lam
    _, returns = compute_advantage("gae", token_level_rewards=rewards * mask, values=values, response_mask=mask,
                                   gamma=gamma, lam=lam)
    _, expected_returns = reference.gae_returns(rewards * mask, values, mask, gamma, lam)
    assert torch.allclose(returns, expected_returns, atol=1e-4, rtol=1e-4)


@SETTINGS
@given(grouped_batches())
def test_prime_matches_paper_formula(batch):
    rewards, values, mask, group_index = batch
    outcomes = rewards.sum(-1)
    advantages, returns = compute_advantage(
        "prime", token_level_rewards=rewards, response_mask=mask, group_index=group_index,
        prm_log_probs=values, prm_ref_log_probs=torch.zeros_like(values), prime_beta=0.5,
        reward_dpo_coef=2.0, reward_gt_coef=3.0)
    token_rewards = reference.prime_token_rewards(0.5 * values, outcomes, mask, group_index.tolist(), 2.0, 3.0)
    expected = discounted_returns(token_rewards, mask, 1.0)
    assert torch.allclose(returns, expected, atol=1e-4)


# ---- properties -----------------------------------------------------------------------------

@SETTINGS
@given(grouped_batches())
def test_grpo_sums_to_zero_per_group(batch):
    rewards, _, mask, group_index = batch
    for normalize in (True, False):
        advantages, _ = compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask,
                                          group_index=group_index, norm_adv_by_std_in_grpo=normalize)
        per_group = torch.zeros(int(group_index.max()) + 1).index_add_(0, group_index, advantages[:, 0])
        assert torch.allclose(per_group, torch.zeros_like(per_group), atol=1e-4)


@SETTINGS
@given(grouped_batches(), st.floats(-10, 10))
def test_rloo_baseline_excludes_self(batch, new_reward):
    rewards, _, mask, group_index = batch
    baseline = lambda r: r.sum(-1) - compute_advantage(  # noqa: E731
        "rloo", token_level_rewards=r, response_mask=mask, group_index=group_index)[0][:, 0]
    changed = rewards.clone()
    changed[0, 0] = new_reward  # token 0 is always valid
    assert torch.allclose(baseline(rewards)[0], baseline(changed)[0], atol=1e-4)


@SETTINGS
@given(grouped_batches(), st.integers(1, 4))
def test_padding_never_changes_advantages(batch, extra):
    rewards, values, mask, group_index = batch
    # Rewards hold 0 outside the mask (what the trainer writes, and what verl's row sums assume);
    # every other input may hold anything there.
    padded_rewards = torch.cat([rewards * mask, torch.zeros(rewards.shape[0], extra)], -1)
    padded_values = torch.cat([values, torch.randn(values.shape[0], extra) * 100], -1)
    padded_mask = torch.cat([mask, torch.zeros(mask.shape[0], extra)], -1)
    common = dict(group_index=group_index, values=values, reward_baselines=torch.ones(len(group_index)),
                  prm_log_probs=values, prm_ref_log_probs=torch.zeros_like(values))
    padded_common = dict(common, values=padded_values, prm_log_probs=padded_values,
                         prm_ref_log_probs=torch.zeros_like(padded_values))
    for name in ["gae", "grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax", "opo",
                 "gpg", "prime"]:
        plain = compute_advantage(name, token_level_rewards=rewards, response_mask=mask, **common)
        padded = compute_advantage(name, token_level_rewards=padded_rewards, response_mask=padded_mask,
                                   **padded_common)
        for a, b in zip(plain, padded):
            assert torch.allclose(a, b[:, :a.shape[1]], atol=1e-5), name
            assert torch.all(b[:, a.shape[1]:] == 0), name


@SETTINGS
@given(grouped_batches())
def test_estimators_are_permutation_equivariant(batch):
    rewards, _, mask, group_index = batch
    order = torch.randperm(len(group_index))
    for name in ["grpo", "rloo", "opo", "gpg", "reinforce_plus_plus_baseline"]:
        advantages, _ = compute_advantage(name, token_level_rewards=rewards, response_mask=mask,
                                          group_index=group_index)
        shuffled, _ = compute_advantage(name, token_level_rewards=rewards[order], response_mask=mask[order],
                                        group_index=group_index[order])
        assert torch.allclose(advantages[order], shuffled, atol=1e-5), name


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["grpo", "rloo", "prime"])
def test_groups_of_one_have_no_baseline(name):
    rewards, mask = outcome_batch([1.0, 0.0, 1.0], [1, 1, 1])
    with pytest.raises(ValueError, match=r"rollout.n > 1.*sample 2 is alone"):
        compute_advantage(name, token_level_rewards=rewards, response_mask=mask,
                          group_index=torch.tensor([0, 0, 1]), prm_log_probs=rewards,
                          prm_ref_log_probs=rewards)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_reward_names_the_sample(bad):
    rewards, mask = outcome_batch([1.0, 0.0, 1.0, 0.0], [1, 2, 2, 1])
    rewards[2, 1] = bad
    with pytest.raises(ValueError, match="token_level_rewards .* at sample 2, token 1"):
        compute_advantage("grpo", token_level_rewards=rewards, response_mask=mask,
                          group_index=torch.tensor([0, 0, 1, 1]))


def test_non_finite_padding_is_an_error_too():
    # 0 * NaN is NaN: padding that is not finite would poison the sums, so it is named as well.
    rewards, mask = outcome_batch([1.0, 0.0], [1, 2])
    rewards[0, 1] = float("nan")
    with pytest.raises(ValueError, match="at sample 0, token 1"):
        compute_advantage("rloo", token_level_rewards=rewards, response_mask=mask, group_index=[0, 0])


def test_huge_finite_rewards_are_not_mistaken_for_nan():
    # The fast check sums the values; this sum overflows to inf, yet every value is finite.
    check_finite("token_level_rewards", torch.tensor([[3e38, 3e38]]))


def test_unknown_estimator_lists_registered_ones():
    with pytest.raises(UnknownNameError, match="advantage estimator .*'grpoo'; registered: gae, grpo, rloo"):
        compute_advantage("grpoo", token_level_rewards=torch.zeros(1, 1), response_mask=torch.ones(1, 1))
