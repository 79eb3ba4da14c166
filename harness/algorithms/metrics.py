"""Metrics every RL trainer logs, as 0-d tensors keyed by the names verl users know.

Call ``.item()`` (or stack and move once) at logging time; nothing here syncs a device by itself.
"""
from __future__ import annotations

import torch

from .tensor_ops import (as_group_ids, group_mean_std, group_sum, masked_mean, masked_sum)

LOG_RATIO_BOUND = 20.0  # exp(20) ~ 5e8: keeps ratios finite when policies drift far apart


def log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """log pi - log pi_old, bounded (clamped in place: the difference is a fresh tensor)."""
    return (log_prob - old_log_prob).clamp_(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)


def ppo_kl(log_ratio: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Approximate KL(old || new) = mean(log pi_old - log pi) over valid tokens; exactly 0 on-policy."""
    return -masked_mean(log_ratio.detach(), response_mask)


def clip_fraction(larger: torch.Tensor, smaller: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Share of valid tokens where ``larger > smaller``: with the PPO loss (to minimise) that is
    ``clip_fraction(clipped_loss, unclipped_loss)``, with the objective (to maximise) the reverse."""
    return masked_mean(torch.gt(larger.detach(), smaller.detach()).to(larger.dtype), response_mask)


def entropy_mean(entropy: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    return masked_mean(entropy, response_mask).detach()


def masked_statistics(prefix: str, values: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{prefix}/mean|max|min`` over the valid entries of ``values`` ([batch] or [batch, len])."""
    valid = mask.bool()
    if not valid.any():
        zero = values.new_zeros(())
        return {f"{prefix}/mean": zero, f"{prefix}/max": zero, f"{prefix}/min": zero}
    inf = torch.tensor(float("inf"), dtype=values.dtype, device=values.device)
    return {
        f"{prefix}/mean": masked_mean(values, mask).detach(),
        f"{prefix}/max": torch.where(valid, values, -inf).max().detach(),
        f"{prefix}/min": torch.where(valid, values, inf).min().detach(),
    }


def batch_metrics(*, token_level_scores: torch.Tensor, token_level_rewards: torch.Tensor,
                  advantages: torch.Tensor, returns: torch.Tensor, response_mask: torch.Tensor,
                  values: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Reward, advantage, return (and value) statistics plus response lengths."""
    has_tokens = response_mask.sum(-1) > 0
    metrics: dict[str, torch.Tensor] = {}
    metrics |= masked_statistics("critic/score", masked_sum(token_level_scores, response_mask, -1), has_tokens)
    metrics |= masked_statistics("critic/rewards", masked_sum(token_level_rewards, response_mask, -1), has_tokens)
    metrics |= masked_statistics("critic/advantages", advantages, response_mask)
    metrics |= masked_statistics("critic/returns", returns, response_mask)
    if values is not None:
        metrics |= masked_statistics("critic/values", values, response_mask)
    lengths = response_mask.sum(-1).to(advantages.dtype)
    metrics |= masked_statistics("response_length", lengths, torch.ones_like(has_tokens))
    metrics["response_length/clip_ratio"] = (response_mask.sum(-1) == response_mask.shape[-1]).float().mean()
    return metrics


def group_reward_metrics(sequence_rewards: torch.Tensor, group_index) -> dict[str, torch.Tensor]:
    """Within-group reward distribution: spread, and how many groups are all-best / all-worst / mixed.

    All-equal groups carry no GRPO signal; their share tells how much of the batch is wasted.
    """
    group_ids, num_groups = as_group_ids(group_index, sequence_rewards.device)
    _, std, _ = group_mean_std(sequence_rewards, group_ids, num_groups)
    maximum = torch.full((num_groups,), -float("inf"), dtype=sequence_rewards.dtype,
                         device=sequence_rewards.device).scatter_reduce(0, group_ids, sequence_rewards, "amax")
    minimum = torch.full((num_groups,), float("inf"), dtype=sequence_rewards.dtype,
                         device=sequence_rewards.device).scatter_reduce(0, group_ids, sequence_rewards, "amin")
    all_equal = maximum == minimum
    best, worst = sequence_rewards.max(), sequence_rewards.min()
    return {
        "group/reward_std/mean": std.mean(),
        "group/reward_std/max": std.max(),
        "group/reward_range/mean": (maximum - minimum).mean(),
        "group/all_equal_fraction": all_equal.float().mean(),
        "group/all_best_fraction": (all_equal & (maximum == best)).float().mean(),
        "group/all_worst_fraction": (all_equal & (minimum == worst) & (best != worst)).float().mean(),
        "group/size/mean": group_sum(torch.ones_like(sequence_rewards), group_ids, num_groups).mean(),
    }
