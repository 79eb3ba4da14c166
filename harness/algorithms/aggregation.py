"""Loss aggregation (``actor_rollout_ref.actor.loss_agg_mode``): a [batch, len] loss -> a scalar.

Every mode is a weighted sum of the valid tokens' losses, sum_i w_i sum_t mask_it loss_it, with one
weight per sequence; a registered mode is the function giving those weights (``sequence_weights``),
so a fused loss can apply them token by token and ``aggregate_loss`` applies them to any loss.

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


def _per_sequence(response_mask: torch.Tensor, value: int | float | torch.Tensor) -> torch.Tensor:
    return torch.ones(response_mask.shape[0], device=response_mask.device) * value


@AGGREGATION_MODES.register("token-mean")
def token_mean(response_mask: torch.Tensor, *, global_token_count: Count = None, global_seq_count: Count = None,
               loss_scale_factor: Count = None) -> torch.Tensor:
    """sum over all valid tokens / number of valid tokens (DAPO's token-level loss)."""
    count = response_mask.sum() if global_token_count is None else global_token_count
    return _per_sequence(response_mask, 1 / _at_least_one(count))


@AGGREGATION_MODES.register("seq-mean-token-sum")
def seq_mean_token_sum(response_mask: torch.Tensor, *, global_token_count: Count = None,
                       global_seq_count: Count = None, loss_scale_factor: Count = None) -> torch.Tensor:
    """mean over sequences of the per-sequence token sum."""
    return _per_sequence(response_mask, 1 / _sequence_count(response_mask, global_seq_count))


@AGGREGATION_MODES.register("seq-mean-token-mean")
def seq_mean_token_mean(response_mask: torch.Tensor, *, global_token_count: Count = None,
                        global_seq_count: Count = None, loss_scale_factor: Count = None) -> torch.Tensor:
    """mean over sequences of the per-sequence token mean (original GRPO)."""
    lengths = response_mask.sum(-1).clamp(min=1)
    return 1 / (lengths * _sequence_count(response_mask, global_seq_count))


@AGGREGATION_MODES.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(response_mask: torch.Tensor, *, global_token_count: Count = None,
                            global_seq_count: Count = None, loss_scale_factor: Count = None) -> torch.Tensor:
    """Dr. GRPO: token sums divided by a constant length, averaged over sequences.

    ``loss_scale_factor`` is that constant (the max response length of the run); it defaults to
    this batch's padded width, which is only constant when every batch is padded alike, so pass it.
    """
    scale = response_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor
    return _per_sequence(response_mask, 1 / (_sequence_count(response_mask, global_seq_count) * scale))


def sequence_weights(response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", *,
                     global_token_count: Count = None, global_seq_count: Count = None,
                     loss_scale_factor: Count = None) -> torch.Tensor:
    """[batch] weights w_i of the mode named ``loss_agg_mode``: loss = sum_i w_i sum_t mask_it loss_it."""
    return AGGREGATION_MODES.get(loss_agg_mode)(
        response_mask, global_token_count=global_token_count, global_seq_count=global_seq_count,
        loss_scale_factor=loss_scale_factor)


def aggregate_loss(loss_mat: torch.Tensor, response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", *,
                   global_token_count: Count = None, global_seq_count: Count = None,
                   loss_scale_factor: Count = None) -> torch.Tensor:
    """Aggregate ``loss_mat`` over ``response_mask`` with the mode named ``loss_agg_mode``."""
    weights = sequence_weights(response_mask, loss_agg_mode, global_token_count=global_token_count,
                               global_seq_count=global_seq_count, loss_scale_factor=loss_scale_factor)
    token_sums = masked_sum(loss_mat, response_mask, dim=-1)
    return (token_sums * weights.to(token_sums.dtype)).sum()
