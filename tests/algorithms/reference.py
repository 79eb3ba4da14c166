"""Per-sample loop implementations of the papers' formulas, written for reading, not speed.

The vectorized code in harness.algorithms must agree with these on random small inputs.
"""
import math

import torch


def outcome(rewards, mask, i):
    return sum(float(rewards[i, t]) for t in range(rewards.shape[1]) if mask[i, t])


def members(group_index, i):
    return [j for j in range(len(group_index)) if group_index[j] == group_index[i]]


def grpo(rewards, mask, group_index, norm_by_std=True, eps=1e-6):
    """Shao et al. 2024: A_i = (r_i - mean(r)) / std(r) over the prompt's group."""
    out = []
    for i in range(rewards.shape[0]):
        group = [outcome(rewards, mask, j) for j in members(group_index, i)]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1))
        advantage = outcome(rewards, mask, i) - mean
        out.append(advantage / (std + eps) if norm_by_std else advantage)
    return out


def rloo(rewards, mask, group_index):
    """Ahmadian et al. 2024: A_i = r_i - 1/(k-1) sum_{j != i} r_j."""
    out = []
    for i in range(rewards.shape[0]):
        others = [outcome(rewards, mask, j) for j in members(group_index, i) if j != i]
        out.append(outcome(rewards, mask, i) - sum(others) / len(others))
    return out


def opo(rewards, mask, group_index):
    """Hao et al. 2025: b = sum_i l_i r_i / sum_i l_i."""
    out = []
    for i in range(rewards.shape[0]):
        group = members(group_index, i)
        lengths = [float(mask[j].sum()) for j in group]
        baseline = sum(l * outcome(rewards, mask, j) for l, j in zip(lengths, group)) / sum(lengths)
        out.append(outcome(rewards, mask, i) - baseline)
    return out


def gae_returns(rewards, values, mask, gamma, lam):
    """Schulman et al. 2016 over the valid tokens only: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[i, t]]
        for k, t in enumerate(steps):
            total = 0.0
            for l, s in enumerate(steps[k:]):
                next_value = float(values[i, steps[k + l + 1]]) if k + l + 1 < len(steps) else 0.0
                delta = float(rewards[i, s]) + gamma * next_value - float(values[i, s])
                total += (gamma * lam) ** l * delta
            advantages[i, t] = total
    return advantages, (advantages + values) * mask


def prime_token_rewards(process, outcomes, mask, group_index, dpo_coef, gt_coef):
    """Cui et al. 2025 eq. 5, before the reward-to-go: leave-one-out process and outcome rewards."""
    rewards = torch.zeros_like(process)
    for i in range(process.shape[0]):
        others = [j for j in members(group_index, i) if j != i]
        process_baseline = sum(float(process[j][mask[j].bool()].mean()) for j in others) / len(others)
        outcome_baseline = sum(float(outcomes[j]) for j in others) / len(others)
        steps = [t for t in range(process.shape[1]) if mask[i, t]]
        for t in steps:
            rewards[i, t] = dpo_coef * (float(process[i, t]) - process_baseline)
        rewards[i, steps[-1]] += gt_coef * (float(outcomes[i]) - outcome_baseline)
    return rewards


def discounted_returns(rewards, mask, gamma):
    """REINFORCE++'s reward-to-go over the valid tokens: G_t = r_t + gamma G_(next valid token).

    Masked tokens (tool output inside a multi-turn response) are skipped: their rewards are ignored
    and the return passes over them undiscounted; they come out 0.
    """
    returns = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        following = 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[i, t]:
                following = float(rewards[i, t]) + gamma * following
                returns[i, t] = following
    return returns


def ppo_dual_clip_losses(old_log_prob, log_prob, advantages, clip_low, clip_high, clip_c):
    """Per-token dual-clip PPO loss, term by term as Schulman et al. 2017 and Ye et al. 2020 write
    it (autograd gives the gradient): max(-A r, -A clip(r)), then min(., -A c) where A < 0."""
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, -20.0, 20.0))
    clipped_loss = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high))
    return torch.where(advantages < 0, torch.minimum(clipped_loss, -advantages * clip_c), clipped_loss)
