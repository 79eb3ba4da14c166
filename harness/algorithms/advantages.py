"""Advantage estimators, registered by the name users put in ``algorithm.adv_estimator``.

Every estimator returns ``(advantages, returns)``, both ``[batch, response_len]`` with zeros on
masked tokens. Groups (the ``n`` samples of one prompt) are given by ``group_index`` (verl's
``index`` / ``uid``): any ids, in any order, groups of any size; they are reduced with segment sums,
never a Python loop over samples or groups. Outcome rewards are the per-sample sum of
``token_level_rewards``, which hold 0 outside ``response_mask`` (as the reward room and
``apply_kl_penalty`` write them; verl sums the same way). Token-level estimators (GAE, REINFORCE++,
ReMax) use the rewards of valid tokens only. Built-in estimators refuse NaN/inf rewards, naming the
sample and token.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from .discounting import discounted_suffix_sums_, next_valid_values
from .registry import Registry, call_with_accepted_kwargs
from .tensor_ops import (as_group_ids, check_finite, group_mean_std, group_size, group_sum, masked_whiten,
                         require_groups_of_two, to_samples, zero_padding)

ADV_ESTIMATORS = Registry("advantage estimator (algorithm.adv_estimator)")
register_adv_est = ADV_ESTIMATORS.register

GroupIndex = torch.Tensor | Sequence[Hashable]
TELESCOPED_MIN_LAM = 1e-6  # GAE's telescoped form scales values by (1 - lam) / lam <= 1e6


def compute_advantage(adv_estimator: str, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the estimator named ``adv_estimator`` (or a ``module:function`` path) on ``inputs``.

    ``inputs`` may hold more than the estimator needs (values, reward_baselines, gamma, ...);
    each estimator takes the keyword arguments it declares.
    """
    return call_with_accepted_kwargs(ADV_ESTIMATORS.get(adv_estimator), inputs)


def _sequence_scores(token_level_rewards: torch.Tensor) -> torch.Tensor:
    """Row sums; a NaN/inf reward anywhere in a row shows in its sum, so the check reads [batch] only."""
    scores = token_level_rewards.sum(-1)
    if not bool(torch.isfinite(scores).all()):
        check_finite("token_level_rewards", token_level_rewards)
    return scores


def _broadcast(per_sample: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    return per_sample.unsqueeze(-1) * response_mask


def _leave_one_out_mean(values: torch.Tensor, group_ids: torch.Tensor, num_groups: int,
                        sizes: torch.Tensor) -> torch.Tensor:
    """Each sample's mean over the other samples of its group (groups of at least 2)."""
    others_total = to_samples(group_sum(values, group_ids, num_groups), group_ids) - values
    return others_total / (to_samples(sizes, group_ids) - 1).to(values.dtype)


def _baseline_or_zero_when_alone(baseline: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """A sample alone in its group has no baseline: 0 (its raw reward is the signal), as verl does."""
    return torch.where(sizes > 1, baseline, torch.zeros_like(baseline))


def discounted_returns(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                       gamma: float = 1.0) -> torch.Tensor:
    """G_t = r_t + gamma * G_(next valid token): the reward-to-go over valid tokens.

    A masked stretch inside a response (tool output between turns) carries the return across it
    undiscounted, its own rewards ignored, as verl's REINFORCE++ does; masked tokens come out 0.
    """
    returns = torch.mul(token_level_rewards, response_mask)
    return discounted_suffix_sums_(returns, response_mask, gamma).mul_(response_mask)


@register_adv_est("gae")
def gae_advantage(*, token_level_rewards: torch.Tensor, values: torch.Tensor,
                  response_mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO with a critic: A_t = sum_l (gamma*lam)^l delta_(t+l), delta_t = r_t + gamma V_next - V_t.

    Masked tokens are skipped: V_next is the value of the next valid token and the sum runs over
    valid tokens only (verl: "skip values and TD-error on observation tokens"). The sum is the
    discounted suffix sum of ``discounting.py`` (discount gamma*lam). The V terms of the TD errors
    telescope, A_t = S_t - V_t with S that sum of x_s = r_s + c_s V_(s+1) m_(s+1), c_s = (1 - lam) gamma
    after a valid token and (1 - lam) / lam after a masked one: no search for the next valid token.
    Below ``TELESCOPED_MIN_LAM`` (TD(0) and its neighbourhood) 1 / lam is too large and the TD errors
    are summed as they are. returns = A + V before whitening; advantages are whitened over valid tokens.
    """
    check_finite("token_level_rewards", token_level_rewards)
    check_finite("values", values)
    advantages = torch.mul(token_level_rewards, response_mask)
    returns = torch.empty_like(advantages)
    if lam < TELESCOPED_MIN_LAM:
        advantages.add_(next_valid_values(values, response_mask), alpha=gamma).sub_(values)
        discounted_suffix_sums_(advantages.mul_(response_mask), response_mask, gamma * lam, scratch=returns)
    else:
        if lam < 1.0:
            following = torch.mul(values[:, 1:], response_mask[:, 1:], out=returns[:, :-1])
            after_valid = following * response_mask[:, :-1]
            advantages[:, :-1].add_(after_valid, alpha=(1 - lam) * gamma)
            advantages[:, :-1].add_(following.sub_(after_valid), alpha=(1 - lam) / lam)  # after masked
        discounted_suffix_sums_(advantages, response_mask, gamma * lam, scratch=returns).sub_(values)
    advantages.mul_(response_mask)
    torch.add(advantages, values, out=returns).mul_(response_mask)
    return masked_whiten(advantages, response_mask, out=advantages), returns


@register_adv_est("grpo")
def grpo_advantage(*, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                   group_index: GroupIndex, norm_adv_by_std_in_grpo: bool = True,
                   epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: A_i = (r_i - mean_g) / (std_g + eps), std unbiased; without std it is Dr. GRPO."""
    scores = _sequence_scores(token_level_rewards)
    group_ids, num_groups = as_group_ids(group_index, scores.device)
    mean, std, sizes = group_mean_std(scores, group_ids, num_groups)
    require_groups_of_two(group_ids, sizes, "grpo")
    centered = scores - to_samples(mean, group_ids)
    if norm_adv_by_std_in_grpo:
        centered = centered / (to_samples(std, group_ids) + epsilon)
    advantages = _broadcast(centered, response_mask)
    return advantages, advantages


@register_adv_est("rloo")
def rloo_advantage(*, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                   group_index: GroupIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO: A_i = r_i - mean_{j != i} r_j (the baseline leaves the sample itself out)."""
    scores = _sequence_scores(token_level_rewards)
    group_ids, num_groups = as_group_ids(group_index, scores.device)
    sizes = group_size(group_ids, num_groups)
    require_groups_of_two(group_ids, sizes, "rloo")
    advantages = _broadcast(scores - _leave_one_out_mean(scores, group_ids, num_groups, sizes), response_mask)
    return advantages, advantages


@register_adv_est("reinforce_plus_plus")
def reinforce_plus_plus_advantage(*, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                  gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted token returns, whitened over the whole batch (no critic, no group)."""
    check_finite("token_level_rewards", token_level_rewards)
    returns = discounted_returns(token_level_rewards, response_mask, gamma)
    return masked_whiten(returns, response_mask), returns


@register_adv_est("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline_advantage(*, token_level_rewards: torch.Tensor,
                                           response_mask: torch.Tensor, group_index: GroupIndex
                                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline: subtract the group mean reward, then whiten over the whole batch.

    The returns are the advantages, as verl's: the centered rewards are whitened in place.
    """
    scores = _sequence_scores(token_level_rewards)
    group_ids, num_groups = as_group_ids(group_index, scores.device)
    mean, _, sizes = group_mean_std(scores, group_ids, num_groups)
    centered = _broadcast(scores - to_samples(_baseline_or_zero_when_alone(mean, sizes), group_ids),
                          response_mask)
    advantages = masked_whiten(centered, response_mask, out=centered)
    return advantages, advantages


@register_adv_est("remax")
def remax_advantage(*, token_level_rewards: torch.Tensor, reward_baselines: torch.Tensor,
                    response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ReMax: reward-to-go minus the reward of the greedy response (``reward_baselines``, [batch])."""
    check_finite("token_level_rewards", token_level_rewards)
    check_finite("reward_baselines", reward_baselines)
    returns = discounted_returns(token_level_rewards, response_mask, 1.0)
    advantages = (returns - reward_baselines.to(returns.dtype).unsqueeze(-1)).mul_(response_mask)
    return advantages, returns


@register_adv_est("opo")
def opo_advantage(*, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                  group_index: GroupIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """OPO: the optimal baseline for sequence-level rewards, b_g = sum |y_i| r_i / sum |y_i|."""
    scores = _sequence_scores(token_level_rewards)
    lengths = response_mask.sum(-1).to(scores.dtype)
    group_ids, num_groups = as_group_ids(group_index, scores.device)
    baseline = (group_sum(lengths * scores, group_ids, num_groups)
                / group_sum(lengths, group_ids, num_groups).clamp(min=1))
    baseline = _baseline_or_zero_when_alone(baseline, group_size(group_ids, num_groups))
    advantages = _broadcast(scores - to_samples(baseline, group_ids), response_mask)
    return advantages, advantages


@register_adv_est("gpg")
def gpg_advantage(*, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                  group_index: GroupIndex, f_norm: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """GPG (Chu et al. 2025): A_i = alpha (r_i - mean_g) / F_norm, alpha = B / B_valid.

    B_valid counts samples of groups whose rewards are not all equal (the others give no gradient),
    so the batch gradient is rescaled as if only informative samples were drawn. A sample alone in
    its group is such a group: its advantage is 0.
    """
    scores = _sequence_scores(token_level_rewards)
    group_ids, num_groups = as_group_ids(group_index, scores.device)
    mean, std, _ = group_mean_std(scores, group_ids, num_groups)
    informative = to_samples(std > 0, group_ids)
    alpha = scores.numel() / informative.sum().clamp(min=1).to(scores.dtype)
    advantages = _broadcast(alpha * (scores - to_samples(mean, group_ids)) / f_norm, response_mask)
    return advantages, advantages


def implicit_process_rewards(prm_log_probs: torch.Tensor, prm_ref_log_probs: torch.Tensor,
                             response_mask: torch.Tensor, prime_beta: float = 0.05) -> torch.Tensor:
    """PRIME's implicit PRM token reward r_t = beta * log(pi_prm(y_t) / pi_ref(y_t))."""
    return zero_padding(prime_beta * (prm_log_probs - prm_ref_log_probs), response_mask)


@register_adv_est("prime")
def prime_advantage(*, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                    group_index: GroupIndex, prm_log_probs: torch.Tensor,
                    prm_ref_log_probs: torch.Tensor, prime_beta: float = 0.05,
                    reward_dpo_coef: float = 5.0, reward_gt_coef: float = 5.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """PRIME (Cui et al. 2025, eq. 5): RLOO on implicit process rewards and on outcome rewards.

    Process: r_t - mean_{j != i} mean_t(r^j)   (other samples' per-token mean process reward).
    Outcome: o_i - mean_{j != i} o_j, placed on the sample's last valid token.
    Returns are the reward-to-go (gamma = 1) of their weighted sum; advantages are those returns
    whitened over the batch.
    """
    check_finite("prm_log_probs", prm_log_probs)
    check_finite("prm_ref_log_probs", prm_ref_log_probs)
    process = implicit_process_rewards(prm_log_probs, prm_ref_log_probs, response_mask, prime_beta)
    outcome = _sequence_scores(token_level_rewards)
    group_ids, num_groups = as_group_ids(group_index, outcome.device)
    sizes = group_size(group_ids, num_groups)
    require_groups_of_two(group_ids, sizes, "prime")

    lengths = response_mask.sum(-1).clamp(min=1).to(outcome.dtype)
    process_mean = process.sum(-1) / lengths
    process_baseline = _leave_one_out_mean(process_mean, group_ids, num_groups, sizes)
    outcome_advantage = outcome - _leave_one_out_mean(outcome, group_ids, num_groups, sizes)

    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    last_token = (response_mask.bool() * positions).argmax(-1)
    outcome_tokens = torch.zeros_like(process)
    outcome_tokens[torch.arange(outcome.numel(), device=outcome.device), last_token] = outcome_advantage
    rewards = (reward_dpo_coef * (process - _broadcast(process_baseline, response_mask))
               + reward_gt_coef * zero_padding(outcome_tokens, response_mask))
    returns = discounted_returns(rewards, response_mask, 1.0)
    return masked_whiten(returns, response_mask), returns
