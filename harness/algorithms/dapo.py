"""DAPO's batch-level pieces (Yu et al. 2025): dynamic sampling and overlong reward shaping.

Dynamic sampling drops groups whose rewards are all equal (zero advantage, zero gradient) and
keeps generating until the batch is full again. The trainer loop is:

    kept = []
    while kept_groups < train_batch_size:
        batch = generate(oversampled_prompt_count(missing, keep_rate, gen_batch_size))
        keep = informative_group_mask(rewards, group_index); kept.append(batch[keep]); ...
    batch = concat(kept)[take_full_groups(group_index, train_batch_size)]
"""
from __future__ import annotations

import math

import torch

from .tensor_ops import as_group_ids, check_finite, to_samples


def informative_group_mask(sequence_rewards: torch.Tensor, group_index) -> torch.Tensor:
    """[batch] bool: True for samples of groups whose rewards are not all equal.

    Groups of one sample are dropped too (nothing to compare against).
    """
    check_finite("sequence_rewards", sequence_rewards)
    group_ids, num_groups = as_group_ids(group_index, sequence_rewards.device)
    shape = (num_groups,)
    maximum = sequence_rewards.new_full(shape, -float("inf")).scatter_reduce(0, group_ids, sequence_rewards, "amax")
    minimum = sequence_rewards.new_full(shape, float("inf")).scatter_reduce(0, group_ids, sequence_rewards, "amin")
    return to_samples(maximum > minimum, group_ids)


def take_full_groups(group_index, num_groups: int) -> torch.Tensor:
    """[batch] bool selecting every sample of the first ``num_groups`` groups (in order of first
    appearance): trims an over-full accumulated batch to exactly the training batch size."""
    group_ids, total = as_group_ids(group_index)
    if total < num_groups:
        raise ValueError(f"only {total} groups available, {num_groups} needed")
    first_seen = torch.full((total,), group_ids.numel(), dtype=torch.long, device=group_ids.device)
    positions = torch.arange(group_ids.numel(), device=group_ids.device)
    first_seen = first_seen.scatter_reduce(0, group_ids, positions, "amin")
    appearance_rank = torch.empty_like(first_seen)
    appearance_rank[torch.argsort(first_seen)] = torch.arange(total, device=group_ids.device)
    return to_samples(appearance_rank, group_ids) < num_groups


def oversampled_prompt_count(missing_groups: int, keep_rate: float, gen_batch_size: int,
                             min_keep_rate: float = 0.1) -> int:
    """Prompts to generate next so the batch fills in one more round, expecting ``keep_rate``.

    At least ``gen_batch_size`` (the configured generation batch, DAPO's over-sampling), more when
    the observed keep rate says that would not suffice; the rate is floored so one bad batch
    cannot ask for an unbounded generation.
    """
    if missing_groups <= 0:
        return 0
    expected_rate = max(keep_rate, min_keep_rate)
    return max(gen_batch_size, math.ceil(missing_groups / expected_rate))


def overlong_reward_penalty(response_lengths: torch.Tensor, max_response_length: int,
                            overlong_buffer_len: int, overlong_penalty_factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (eq. 13), added to the outcome reward.

    0 up to L_max - L_cache, then falling linearly to -penalty_factor at L_max (and staying there).
    Config: ``reward_model.overlong_buffer.{len, penalty_factor}``, ``data.max_response_length``.
    """
    if not 0 < overlong_buffer_len <= max_response_length:
        raise ValueError(f"overlong_buffer_len must be in (0, max_response_length={max_response_length}], "
                         f"got {overlong_buffer_len}")
    expected_length = max_response_length - overlong_buffer_len
    excess = (response_lengths.to(torch.float32) - expected_length) / overlong_buffer_len
    return -overlong_penalty_factor * torch.clamp(excess, 0.0, 1.0)

