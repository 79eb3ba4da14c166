"""Loss aggregation (``actor_rollout_ref.actor.loss_agg_mode``): a [batch, len] loss -> a scalar.

Gradient accumulation must give the gradient of one big batch, so every mode divides by a
*global* normalizer when given one: the token count (``global_token_count``) or the count of
non-empty sequences (``global_seq_count``) of the whole mini-batch (summed over micro-batches and
data-parallel ranks by the caller, see ``global_batch_counts``). Then the sum of the micro-batch
losses equals the full-batch loss. Without them, the micro-batch's own counts are used.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from .registry import Registry
from .tensor_ops import masked_sum

AGGREGATION_MODES = Registry("loss aggregation mode (actor_rollout_ref.actor.loss_agg_mode)")

Count = int | float | torch.Tensor | None


def global_batch_counts(response_masks: Iterable[torch.Tensor]) -> tuple[int, int]:
    """(valid tokens, non-empty sequences) over the micro-batches of one mini-batch."""
    tokens = sequences = 0
    for mask in response_masks:
        tokens += int(mask.sum())
        sequences += int((mask.sum(-1) > 0).sum())
    return tokens, sequences


def _at_least_one(count: int | float | torch.Tensor) -> int | float | torch.Tensor:
    # An all-padding batch has a zero sum: dividing by 1 keeps it 0 instead of 0/0 = NaN.
    return count.clamp(min=1) if isinstance(count, torch.Tensor) else max(count, 1)


def _sequence_count(response_mask: torch.Tensor, global_seq_count: Count) -> Count:
    # Fully padded rows (micro-batch filler) are not sequences: they must not dilute the mean.
    return _at_least_one((response_mask.sum(-1) > 0).sum() if global_seq_count is None else global_seq_count)


@AGGREGATION_MODES.register("token-mean")
def token_mean(loss_mat: torch.Tensor, response_mask: torch.Tensor, *, global_token_count: Count = None,
               global_seq_count: Count = None, loss_scale_factor: Count = None) -> torch.Tensor:
    """sum over all valid tokens / number of valid tokens (DAPO's token-level loss)."""
    count = response_mask.sum() if global_token_count is None else global_token_count
    return masked_sum(loss_mat, response_mask) / _at_least_one(count)


@AGGREGATION_MODES.register("seq-mean-token-sum")
def seq_mean_token_sum(loss_mat: torch.Tensor, response_mask: torch.Tensor, *, global_token_count: Count = None,
                       global_seq_count: Count = None, loss_scale_factor: Count = None) -> torch.Tensor:
    """mean over sequences of the per-sequence token sum."""
    return masked_sum(loss_mat, response_mask) / _sequence_count(response_mask, global_seq_count)


@AGGREGATION_MODES.register("seq-mean-token-mean")
def seq_mean_token_mean(loss_mat: torch.Tensor, response_mask: torch.Tensor, *, global_token_count: Count = None,
                        global_seq_count: Count = None, loss_scale_factor: Count = None) -> torch.Tensor:
    """mean over sequences of the per-sequence token mean (original GRPO)."""
    lengths = response_mask.sum(-1).clamp(min=1).to(loss_mat.dtype)
    per_sequence = masked_sum(loss_mat, response_mask, dim=-1) / lengths
    return per_sequence.sum() / _sequence_count(response_mask, global_seq_count)


@AGGREGATION_MODES.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss_mat: torch.Tensor, response_mask: torch.Tensor, *,
                            global_token_count: Count = None, global_seq_count: Count = None,
                            loss_scale_factor: Count = None) -> torch.Tensor:
    """Dr. GRPO: token sums divided by a constant length, averaged over sequences.

    ``loss_scale_factor`` is that constant (the max response length of the run); it defaults to
    this batch's padded width, which is only constant when every batch is padded alike, so pass it.
    """
    scale = response_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor
    return masked_sum(loss_mat, response_mask) / (_sequence_count(response_mask, global_seq_count) * scale)


def aggregate_loss(loss_mat: torch.Tensor, response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", *,
                   global_token_count: Count = None, global_seq_count: Count = None,
                   loss_scale_factor: Count = None) -> torch.Tensor:
    """Aggregate ``loss_mat`` over ``response_mask`` with the mode named ``loss_agg_mode``."""
    return AGGREGATION_MODES.get(loss_agg_mode)(
        loss_mat, response_mask, global_token_count=global_token_count,
        global_seq_count=global_seq_count, loss_scale_factor=loss_scale_factor)
