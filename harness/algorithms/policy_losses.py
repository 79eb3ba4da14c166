"""Policy losses (``actor_rollout_ref.actor.policy_loss.loss_mode``), the critic's value loss, entropy.

A policy loss returns ``(loss, metrics)``: the aggregated scalar and 0-d tensors ``pg_clipfrac``,
``pg_clipfrac_lower``, ``ppo_kl``. ``rollout_is_weights`` (from ``mismatch.py``) multiply the
per-token loss. Aggregation takes the global normalizers described in ``aggregation.py``.
"""
from __future__ import annotations

from typing import Any

import torch

from .aggregation import Count, aggregate_loss
from .metrics import clip_fraction, log_ratio, ppo_kl
from .registry import Registry, call_with_accepted_kwargs
from .tensor_ops import masked_mean, masked_sum

POLICY_LOSSES = Registry("policy loss (actor_rollout_ref.actor.policy_loss.loss_mode)")
register_policy_loss = POLICY_LOSSES.register

LossAndMetrics = tuple[torch.Tensor, dict[str, torch.Tensor]]
SEQUENCE_LOG_RATIO_BOUND = 10.0  # GSPO's sequence ratio: exp(10) is already far outside any clip


def compute_policy_loss(loss_mode: str, **inputs: Any) -> LossAndMetrics:
    """Run the policy loss named ``loss_mode`` (or a ``module:function`` path) on ``inputs``."""
    return call_with_accepted_kwargs(POLICY_LOSSES.get(loss_mode), inputs)


def _clip_bounds(clip_ratio: float, clip_ratio_low: float | None, clip_ratio_high: float | None
                 ) -> tuple[float, float]:
    return (clip_ratio if clip_ratio_low is None else clip_ratio_low,
            clip_ratio if clip_ratio_high is None else clip_ratio_high)


def _weighted(losses: torch.Tensor, rollout_is_weights: torch.Tensor | None) -> torch.Tensor:
    return losses if rollout_is_weights is None else losses * rollout_is_weights.detach()


@register_policy_loss("vanilla", "ppo")
def ppo_clip_loss(*, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                  response_mask: torch.Tensor, clip_ratio: float = 0.2, clip_ratio_low: float | None = None,
                  clip_ratio_high: float | None = None, clip_ratio_c: float = 3.0,
                  loss_agg_mode: str = "token-mean", rollout_is_weights: torch.Tensor | None = None,
                  global_token_count: Count = None, global_seq_count: Count = None,
                  loss_scale_factor: Count = None) -> LossAndMetrics:
    """PPO clip, asymmetric bounds (DAPO clip-higher), dual-clip for negative advantages.

    L = max(-A r, -A clip(r, 1-low, 1+high)); for A < 0 it is further capped at -A c (Ye et al. 2020).
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 for dual-clip PPO, got {clip_ratio_c}")
    low, high = _clip_bounds(clip_ratio, clip_ratio_low, clip_ratio_high)
    token_log_ratio = log_ratio(log_prob, old_log_prob)
    ratio = torch.exp(token_log_ratio)
    # Written as the objective to maximise (A r terms), negated once after the linear aggregation:
    # the same loss with fewer passes over [batch, len], which bound this function's speed.
    advantages = advantages.detach()
    unclipped = advantages * ratio
    clipped = advantages * torch.clamp(ratio, 1 - low, 1 + high)
    clipped_objective = torch.minimum(unclipped, clipped)
    # A c for A < 0, and 0 for A >= 0 where A r is already >= 0: one max, no branch.
    dual_clip_bound = (advantages * clip_ratio_c).clamp_(max=0)
    objective = torch.maximum(clipped_objective, dual_clip_bound)
    loss = -aggregate_loss(_weighted(objective, rollout_is_weights), response_mask, loss_agg_mode,
                           global_token_count=global_token_count, global_seq_count=global_seq_count,
                           loss_scale_factor=loss_scale_factor)
    return loss, {
        "pg_clipfrac": clip_fraction(unclipped, clipped, response_mask),
        "pg_clipfrac_lower": clip_fraction(dual_clip_bound, clipped_objective, response_mask),
        "ppo_kl": ppo_kl(token_log_ratio, response_mask),
    }


@register_policy_loss("gspo")
def gspo_loss(*, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              response_mask: torch.Tensor, clip_ratio: float = 0.2, clip_ratio_low: float | None = None,
              clip_ratio_high: float | None = None, loss_agg_mode: str = "seq-mean-token-mean",
              rollout_is_weights: torch.Tensor | None = None, global_token_count: Count = None,
              global_seq_count: Count = None, loss_scale_factor: Count = None) -> LossAndMetrics:
    """GSPO (Zheng et al. 2025): one length-normalized ratio per sequence, clipped.

    s_i = exp(mean_t log(pi/pi_old)); the token form s_i * pi_t / sg(pi_t) has value s_i and the
    gradient of eq. (GSPO-token). The paper's clip range is tiny (3e-4 / 4e-4): set it.
    """
    low, high = _clip_bounds(clip_ratio, clip_ratio_low, clip_ratio_high)
    token_log_ratio = log_ratio(log_prob, old_log_prob)
    lengths = response_mask.sum(-1).clamp(min=1).to(log_prob.dtype)
    sequence_log_ratio = masked_sum(token_log_ratio, response_mask, dim=-1) / lengths
    token_form = sequence_log_ratio.detach().unsqueeze(-1) + log_prob - log_prob.detach()
    ratio = torch.exp(torch.clamp(token_form, max=SEQUENCE_LOG_RATIO_BOUND))
    negative_advantages = -advantages.detach()
    unclipped = negative_advantages * ratio
    clipped = negative_advantages * torch.clamp(ratio, 1 - low, 1 + high)
    losses = torch.maximum(unclipped, clipped)
    loss = aggregate_loss(_weighted(losses, rollout_is_weights), response_mask, loss_agg_mode,
                          global_token_count=global_token_count, global_seq_count=global_seq_count,
                          loss_scale_factor=loss_scale_factor)
    return loss, {
        "pg_clipfrac": clip_fraction(clipped, unclipped, response_mask),
        "pg_clipfrac_lower": torch.zeros((), dtype=log_prob.dtype, device=log_prob.device),
        "ppo_kl": ppo_kl(token_log_ratio, response_mask),
    }


@register_policy_loss("cispo")
def cispo_loss(*, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
               response_mask: torch.Tensor, clip_ratio: float = 0.2, clip_ratio_low: float | None = None,
               clip_ratio_high: float | None = None, loss_agg_mode: str = "token-mean",
               rollout_is_weights: torch.Tensor | None = None, global_token_count: Count = None,
               global_seq_count: Count = None, loss_scale_factor: Count = None) -> LossAndMetrics:
    """CISPO (MiniMax-M1): L = -sg(clip(r, 1-low, 1+high)) A log pi.

    The IS weight is clipped instead of the update, so every token keeps a gradient. The paper
    has no lower bound: give ``clip_ratio_low >= 1`` to drop it.
    """
    low, high = _clip_bounds(clip_ratio, clip_ratio_low, clip_ratio_high)
    token_log_ratio = log_ratio(log_prob, old_log_prob)
    ratio = torch.exp(token_log_ratio)
    weight = torch.clamp(ratio, min=max(1 - low, 0.0), max=1 + high).detach()
    losses = -advantages * weight * log_prob
    loss = aggregate_loss(_weighted(losses, rollout_is_weights), response_mask, loss_agg_mode,
                          global_token_count=global_token_count, global_seq_count=global_seq_count,
                          loss_scale_factor=loss_scale_factor)
    return loss, {
        "pg_clipfrac": masked_mean((weight != ratio.detach()).to(ratio.dtype), response_mask).detach(),
        "pg_clipfrac_lower": masked_mean((ratio.detach() < 1 - low).to(ratio.dtype), response_mask).detach(),
        "ppo_kl": ppo_kl(token_log_ratio, response_mask),
    }


def value_loss(*, vpreds: torch.Tensor, returns: torch.Tensor, values: torch.Tensor,
               response_mask: torch.Tensor, cliprange_value: float = 0.5, loss_agg_mode: str = "token-mean",
               global_token_count: Count = None, global_seq_count: Count = None,
               loss_scale_factor: Count = None) -> LossAndMetrics:
    """Clipped critic loss 0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2) (``critic.cliprange_value``)."""
    clipped_vpreds = values + torch.clamp(vpreds - values, -cliprange_value, cliprange_value)
    unclipped_error = (vpreds - returns) ** 2
    clipped_error = (clipped_vpreds - returns) ** 2
    losses = 0.5 * torch.maximum(unclipped_error, clipped_error)
    loss = aggregate_loss(losses, response_mask, loss_agg_mode, global_token_count=global_token_count,
                          global_seq_count=global_seq_count, loss_scale_factor=loss_scale_factor)
    return loss, {"vf_clipfrac": masked_mean((clipped_error > unclipped_error).to(losses.dtype),
                                             response_mask).detach()}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim: logsumexp(z) - sum softmax(z) z."""
    return torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)


def actor_loss(pg_loss: torch.Tensor, *, entropy_loss: torch.Tensor | None = None, entropy_coeff: float = 0.0,
               kl_loss: torch.Tensor | None = None, kl_loss_coef: float = 0.0) -> torch.Tensor:
    """pg_loss - entropy_coeff * entropy (the bonus) + kl_loss_coef * kl (``use_kl_loss``).

    ``entropy_loss`` and ``kl_loss`` are already aggregated with the same mode and normalizers.
    """
    total = pg_loss
    if entropy_loss is not None and entropy_coeff != 0.0:
        total = total - entropy_coeff * entropy_loss
    if kl_loss is not None and kl_loss_coef != 0.0:
        total = total + kl_loss_coef * kl_loss
    return total
