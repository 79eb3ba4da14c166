"""GRPO advantages + PPO-clip loss: harness.algorithms (vectorized) vs a per-group Python loop.

    python benchmarks/algorithms_bench.py                      # 16384 sequences x 1024 tokens
    python benchmarks/algorithms_bench.py --sequences 2048 --tokens 256

Prints both times per stage (best of --repeats), the difference between the two losses, and last
``speedup: X`` (loop total time / vectorized total time).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from harness.algorithms import compute_advantage, compute_policy_loss  # noqa: E402

CLIP_LOW, CLIP_HIGH, CLIP_C, EPSILON = 0.2, 0.28, 3.0, 1e-6


def make_batch(sequences: int, tokens: int, group_size: int, device: str, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, tokens + 1, (sequences,), generator=generator)
    mask = (torch.arange(tokens) < lengths.unsqueeze(-1)).float()
    rewards = torch.zeros(sequences, tokens)
    rewards[torch.arange(sequences), lengths - 1] = (torch.rand(sequences, generator=generator) < 0.4).float()
    # Arbitrary, shuffled group ids: the realistic case after dynamic sampling / sharding.
    group_index = torch.arange(sequences // group_size).repeat_interleave(group_size) * 7919 + 13
    group_index = group_index[torch.randperm(sequences, generator=generator)]
    old_log_prob = -torch.rand(sequences, tokens, generator=generator) * 4
    log_prob = old_log_prob + 0.1 * torch.randn(sequences, tokens, generator=generator)
    return {key: value.to(device) for key, value in dict(
        token_level_rewards=rewards, response_mask=mask, group_index=group_index,
        old_log_prob=old_log_prob, log_prob=log_prob).items()}


def vectorized_advantages(batch: dict) -> torch.Tensor:
    advantages, _ = compute_advantage("grpo", token_level_rewards=batch["token_level_rewards"],
                                      response_mask=batch["response_mask"], group_index=batch["group_index"],
                                      epsilon=EPSILON)
    return advantages


def vectorized_loss(batch: dict, advantages: torch.Tensor) -> tuple[torch.Tensor, dict]:
    return compute_policy_loss("vanilla", old_log_prob=batch["old_log_prob"], log_prob=batch["log_prob"],
                                  advantages=advantages, response_mask=batch["response_mask"],
                                  clip_ratio_low=CLIP_LOW, clip_ratio_high=CLIP_HIGH, clip_ratio_c=CLIP_C,
                                  loss_agg_mode="token-mean")


def loop_advantages(batch: dict) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The formulas written the straightforward way: collect each group's samples, loop over groups.

    Returns, per group, its sample rows and their advantages (broadcast over the group's tokens).
    """
    mask = batch["response_mask"]
    scores = (batch["token_level_rewards"] * mask).sum(-1)
    members: dict[int, list[int]] = {}
    for sample, group in enumerate(batch["group_index"].tolist()):
        members.setdefault(group, []).append(sample)
    per_group = {}
    for group, samples in members.items():
        rows = torch.tensor(samples, device=mask.device)
        group_scores = scores[rows]
        group_advantage = (group_scores - group_scores.mean()) / (group_scores.std() + EPSILON)
        per_group[group] = rows, group_advantage.unsqueeze(-1) * mask[rows]
    return per_group


def loop_loss(batch: dict, per_group: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, dict]:
    """PPO clip + dual clip, and the same metrics (clip fractions, ppo_kl), one group at a time."""
    mask = batch["response_mask"]
    total_loss = torch.zeros((), device=mask.device)
    clipped_tokens = lower_clipped_tokens = kl_sum = torch.zeros((), device=mask.device)
    for rows, advantages in per_group.values():
        group_mask = mask[rows]
        log_ratio = torch.clamp(batch["log_prob"][rows] - batch["old_log_prob"][rows], -20, 20)
        ratio = torch.exp(log_ratio)
        unclipped = -advantages * ratio
        clipped = -advantages * torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
        clipped_objective = torch.maximum(unclipped, clipped)
        dual_bound = -advantages * CLIP_C
        losses = torch.where(advantages < 0, torch.minimum(clipped_objective, dual_bound), clipped_objective)
        total_loss = total_loss + (losses * group_mask).sum()
        clipped_tokens = clipped_tokens + ((clipped > unclipped) * group_mask).sum()
        lower_clipped_tokens = lower_clipped_tokens + (
            (clipped_objective > dual_bound) * (advantages < 0) * group_mask).sum()
        kl_sum = kl_sum - (log_ratio * group_mask).sum()
    tokens = mask.sum()
    return total_loss / tokens, {"pg_clipfrac": clipped_tokens / tokens,
                                 "pg_clipfrac_lower": lower_clipped_tokens / tokens, "ppo_kl": kl_sum / tokens}


def timed(function, *args, device: str) -> tuple[float, object]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        result = function(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def best_times(advantage_function, loss_function, batch: dict, repeats: int, device: str
               ) -> tuple[float, float, tuple[torch.Tensor, dict]]:
    """Best-of-``repeats`` time of each stage, and the (loss, metrics)."""
    advantage_times, loss_times = [], []
    for _ in range(repeats):
        advantage_time, advantages = timed(advantage_function, batch, device=device)
        loss_time, loss_and_metrics = timed(loss_function, batch, advantages, device=device)
        advantage_times.append(advantage_time)
        loss_times.append(loss_time)
    return min(advantage_times), min(loss_times), loss_and_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--group-size", type=int, default=8, help="rollout.n")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    batch = make_batch(args.sequences, args.tokens, args.group_size, args.device)
    print(f"{args.sequences} sequences x {args.tokens} tokens, groups of {args.group_size}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}")
    results = {}
    for name, advantage_function, loss_function, repeats in [
            ("vectorized (harness.algorithms)", vectorized_advantages, vectorized_loss, args.repeats),
            ("per-group Python loop", loop_advantages, loop_loss, max(1, args.repeats - 1))]:
        advantage_time, loss_time, outputs = best_times(advantage_function, loss_function, batch, repeats,
                                                        args.device)
        results[name] = advantage_time + loss_time, outputs
        print(f"{name:32s} advantages {advantage_time:8.4f} s  loss {loss_time:8.4f} s  "
              f"total {advantage_time + loss_time:8.4f} s")
    (vectorized_time, (vectorized_loss_value, vectorized_metrics)), (loop_time, (loop_loss_value, loop_metrics)) = \
        results.values()
    differences = {key: abs(vectorized_metrics[key].item() - loop_metrics[key].item()) for key in loop_metrics}
    differences["loss"] = abs(vectorized_loss_value.item() - loop_loss_value.item())
    print(f"loss {vectorized_loss_value.item():.6f}; largest |vectorized - loop| over loss and metrics: "
          f"{max(differences.values()):.2e}")
    print(f"speedup: {loop_time / vectorized_time:.1f}")

if __name__ == "__main__":
    main()
