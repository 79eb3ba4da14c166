"""Rollouts -> the tensors of one RL batch, the mini-batch plan, and the prompt order.

Layout (one row per sample, prompt-major: the n samples of a prompt are adjacent):
  input_ids [B, S]       prompt then response, right-padded (S rounded up to a multiple of 8, so
                         any tensor-parallel size up to 8 divides it for sequence parallelism)
  prompt_lengths [B]
  response_mask [B, R]   1 on generated tokens (R: the longest response of the batch)
  rollout_log_probs [B, R]
  token_level_scores [B, R]  the sample's score on its last response token
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch

from harness.algorithms import global_batch_counts
from harness.workers.rl_losses import MiniBatchCounts

PAD_MULTIPLE = 8


@dataclass
class Sample:
    prompt_index: int  # into the dataset
    group: int  # samples of one prompt in this batch share it (GRPO's group / verl's uid)
    prompt_ids: List[int]
    response_ids: List[int]
    rollout_log_probs: List[float]
    finish_reason: str
    score: float = 0.0
    baseline: float = 0.0  # ReMax: the score of the prompt's greedy answer


def to_tensors(samples: Sequence[Sample], pad_token_id: int) -> Dict[str, torch.Tensor]:
    count = len(samples)
    response_length = max(1, max(len(s.response_ids) for s in samples))
    seq_length = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    seq_length = -(-seq_length // PAD_MULTIPLE) * PAD_MULTIPLE
    input_ids = torch.full((count, seq_length), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros(count, response_length)
    rollout_log_probs = torch.zeros(count, response_length)
    scores = torch.zeros(count, response_length)
    for row, s in enumerate(samples):
        sequence = s.prompt_ids + s.response_ids
        input_ids[row, :len(sequence)] = torch.tensor(sequence)
        length = len(s.response_ids)
        response_mask[row, :length] = 1.0
        rollout_log_probs[row, :length] = torch.tensor(s.rollout_log_probs, dtype=torch.float32)
        scores[row, max(length - 1, 0)] = s.score
    return {"input_ids": input_ids, "prompt_lengths": torch.tensor([len(s.prompt_ids) for s in samples]),
            "response_mask": response_mask, "rollout_log_probs": rollout_log_probs,
            "token_level_scores": scores}


def minibatch_plan(count: int, minibatch_size: int, epochs: int, shuffle: bool, seed: int) -> List[torch.Tensor]:
    """Index tensors of the mini-batches, epoch after epoch (each epoch reshuffled when `shuffle`)."""
    generator = torch.Generator().manual_seed(seed)
    plan = []
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        plan += list(order.split(minibatch_size))
    return plan


def minibatch_counts(loss_mask: torch.Tensor, plan: List[torch.Tensor], data_parallel: int,
                     micro_batch_size: int) -> List[MiniBatchCounts]:
    counts = []
    for index in plan:
        if len(index) % data_parallel:
            raise ValueError(f"a mini-batch of {len(index)} sequences does not split over {data_parallel} "
                             "data-parallel ranks: make ppo_mini_batch_size x rollout.n a multiple of it")
        tokens, sequences = global_batch_counts([loss_mask[index]])
        micro = -(-(len(index) // data_parallel) // micro_batch_size)
        counts.append(MiniBatchCounts(int(tokens), int(sequences), float(micro * data_parallel)))
    return counts


class PromptOrder:
    """Which prompts come next: a seeded permutation per epoch and a cursor (saved with checkpoints,
    so a resumed run, with or without dynamic sampling, continues with the same prompts)."""

    def __init__(self, size: int, seed: int, shuffle: bool):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch, self.cursor = 0, 0

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def take(self, count: int) -> List[int]:
        taken = []
        while len(taken) < count:
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
            order = self._order()
            step = min(count - len(taken), self.size - self.cursor)
            taken += order[self.cursor:self.cursor + step].tolist()
            self.cursor += step
        return taken

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
