"""DAPO: dynamic sampling keeps the batch full of informative groups; overlong shaping by hand."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from harness.algorithms import (compute_advantage, informative_group_mask, overlong_reward_penalty,
                                oversampled_prompt_count, take_full_groups)


def test_informative_groups_by_hand():
    # Group 9: 1, 0 (mixed, kept); group 2: 1, 1 (all equal, dropped); group 5: one sample (dropped).
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5])
    keep = informative_group_mask(rewards, torch.tensor([9, 2, 9, 2, 5]))
    assert keep.tolist() == [True, False, True, False, False]


def test_informative_mask_rejects_nan():
    with pytest.raises(ValueError, match="sample 1"):
        informative_group_mask(torch.tensor([0.0, float("nan")]), torch.tensor([0, 0]))


def test_take_full_groups_keeps_first_groups_whole():
    # Groups in order of appearance: 4, 1, 8 -> the first two are 4 and 1.
    selected = take_full_groups(torch.tensor([4, 4, 1, 8, 1, 8]), 2)
    assert selected.tolist() == [True, True, True, False, True, False]
    with pytest.raises(ValueError, match="only 3 groups available, 4 needed"):
        take_full_groups(torch.tensor([4, 4, 1, 8, 1, 8]), 4)


def test_oversampled_prompt_count():
    assert oversampled_prompt_count(0, 0.5, 96) == 0
    assert oversampled_prompt_count(10, 0.5, 96) == 96  # the generation batch already suffices
    assert oversampled_prompt_count(100, 0.5, 96) == 200  # 100 groups at a 50% keep rate
    assert oversampled_prompt_count(100, 0.0, 96) == 1000  # floored keep rate bounds the request


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 6), st.integers(1, 12))
def test_dynamic_sampling_loop_fills_the_batch(seed, n, train_batch_size):
    """The trainer's loop: generate, drop all-equal groups, generate more, trim to the exact size."""
    generator = torch.Generator().manual_seed(seed)
    kept_rewards, kept_index = [], []
    kept_groups, next_group_id, keep_rate = 0, 0, 1.0
    for _ in range(50):  # max_num_gen_batches
        if kept_groups >= train_batch_size:
            break
        prompts = oversampled_prompt_count(train_batch_size - kept_groups, keep_rate, gen_batch_size=4)
        group_index = torch.arange(next_group_id, next_group_id + prompts).repeat_interleave(n)
        next_group_id += prompts
        rewards = (torch.rand(prompts * n, generator=generator) < 0.2).float()  # mostly all-zero groups
        keep = informative_group_mask(rewards, group_index)
        kept_rewards.append(rewards[keep])
        kept_index.append(group_index[keep])
        kept_groups += int(keep.sum()) // n
        keep_rate = max(float(keep.float().mean()), 1e-3)
    rewards, group_index = torch.cat(kept_rewards), torch.cat(kept_index)
    selected = take_full_groups(group_index, train_batch_size)
    rewards, group_index = rewards[selected], group_index[selected]
    assert rewards.numel() == train_batch_size * n
    assert torch.unique(group_index).numel() == train_batch_size
    assert informative_group_mask(rewards, group_index).all()
    # Every kept group yields a usable GRPO advantage (no zero-std group reaches the loss).
    advantages, _ = compute_advantage("grpo", token_level_rewards=rewards.unsqueeze(-1),
                                      response_mask=torch.ones(rewards.numel(), 1), group_index=group_index)
    assert (advantages != 0).all()


def test_overlong_penalty_by_hand():
    # L_max 20, buffer 4: no penalty up to 16, then -(len - 16) / 4, reaching -1 at 20 and staying.
    lengths = torch.tensor([10, 16, 18, 20, 25])
    penalty = overlong_reward_penalty(lengths, max_response_length=20, overlong_buffer_len=4)
    assert torch.allclose(penalty, torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))
    scaled = overlong_reward_penalty(lengths, max_response_length=20, overlong_buffer_len=4,
                                     overlong_penalty_factor=0.5)
    assert torch.allclose(scaled, penalty * 0.5)
    with pytest.raises(ValueError, match="overlong_buffer_len"):
        overlong_reward_penalty(lengths, max_response_length=20, overlong_buffer_len=0)
