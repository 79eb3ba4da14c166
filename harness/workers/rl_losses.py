"""Micro-batch loss functions for Megatron's schedule: the PPO actor loss and the critic's value loss.

Each loss is aggregated with the mini-batch's global token / sequence counts (over all micro-batches
and data-parallel ranks), so the micro-batch losses sum to the mini-batch loss. Megatron divides a
micro-batch loss by the number of micro-batches and averages gradients over data-parallel ranks;
`scale` (= micro-batches x data-parallel size) undoes both, making the gradient exactly that of the
mini-batch loss however the mini-batch was split.

Reported metrics are weighted by the micro-batch's share of the mini-batch's tokens, so summing them
over micro-batches and ranks gives mini-batch token means (`sum_metrics`).
"""
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch

from harness.algorithms import aggregate_loss, compute_policy_loss, kl_loss, value_loss
from harness.algorithms.policy_losses import actor_loss
from harness.algorithms.tensor_ops import masked_mean
from harness.workers.token_outputs import token_log_probs, token_values


@dataclass
class PolicyLossSettings:
    """The actor's loss keys (verl: actor_rollout_ref.actor.*)."""

    loss_mode: str = "vanilla"
    clip_ratio: float = 0.2
    clip_ratio_low: Optional[float] = None
    clip_ratio_high: Optional[float] = None
    clip_ratio_c: float = 3.0
    loss_agg_mode: str = "token-mean"
    loss_scale_factor: Optional[int] = None
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"


@dataclass
class MiniBatchCounts:
    tokens: int  # loss tokens of the whole mini-batch
    sequences: int
    scale: float  # micro-batches x data-parallel size (see the module doc)


def _share(mask: torch.Tensor, counts: MiniBatchCounts) -> torch.Tensor:
    return mask.sum() / max(counts.tokens, 1)


def policy_loss(output, batch, *, settings: PolicyLossSettings, counts: MiniBatchCounts, vocab_size: int):
    mask = batch["loss_mask"]
    log_prob, entropy = token_log_probs(output, batch["tokens"], batch["prompt_lengths"], mask.shape[1],
                                        vocab_size, with_entropy=True, entropy_grad=settings.entropy_coeff != 0)
    common = dict(response_mask=mask, loss_agg_mode=settings.loss_agg_mode, global_token_count=counts.tokens,
                  global_seq_count=counts.sequences, loss_scale_factor=settings.loss_scale_factor)
    pg_loss, pg_metrics = compute_policy_loss(
        settings.loss_mode, old_log_prob=batch["old_log_probs"], log_prob=log_prob, advantages=batch["advantages"],
        clip_ratio=settings.clip_ratio, clip_ratio_low=settings.clip_ratio_low,
        clip_ratio_high=settings.clip_ratio_high, clip_ratio_c=settings.clip_ratio_c,
        rollout_is_weights=batch.get("rollout_is_weights"), **common)
    kl = None
    if settings.use_kl_loss:
        kl = kl_loss(log_prob=log_prob, ref_log_prob=batch["ref_log_probs"], kl_loss_type=settings.kl_loss_type, **common)
    entropy_loss = aggregate_loss(entropy, mask, **{k: v for k, v in common.items() if k != "response_mask"})
    loss = actor_loss(pg_loss, entropy_loss=entropy_loss, entropy_coeff=settings.entropy_coeff,
                      kl_loss=kl, kl_loss_coef=settings.kl_loss_coef)
    share = _share(mask, counts)
    metrics = {"actor/pg_loss": pg_loss.detach(), "actor/loss": loss.detach(),
               "actor/entropy": masked_mean(entropy.detach(), mask) * share,
               **{f"actor/{k}": v.detach() * share for k, v in pg_metrics.items()}}
    if kl is not None:
        metrics["actor/kl_loss"] = kl.detach()
    return loss * counts.scale, metrics


def value_loss_fn(output, batch, *, cliprange_value: float, loss_agg_mode: str, counts: MiniBatchCounts):
    mask = batch["response_mask"]
    vpreds = token_values(output, batch["prompt_lengths"], mask.shape[1])
    loss, metrics = value_loss(vpreds=vpreds, returns=batch["returns"], values=batch["values"], response_mask=mask,
                               cliprange_value=cliprange_value, loss_agg_mode=loss_agg_mode,
                               global_token_count=counts.tokens, global_seq_count=counts.sequences)
    share = _share(mask, counts)
    return loss * counts.scale, {"critic/vf_loss": loss.detach(),
                                 "critic/vf_clipfrac": metrics["vf_clipfrac"] * share,
                                 "critic/vpred_mean": masked_mean(vpreds.detach(), mask) * share}


def sum_metrics(outputs: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, float]:
    total: Dict[str, float] = {}
    for output in outputs:
        for key, value in output.items():
            total[key] = total.get(key, 0.0) + float(value)
    return total
