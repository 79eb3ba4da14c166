"""Policy losses (``actor_rollout_ref.actor.policy_loss.loss_mode``), the critic's value loss, entropy.

A policy loss returns ``(loss, metrics)``: the aggregated scalar and 0-d tensors ``pg_clipfrac``,
``pg_clipfrac_lower``, ``ppo_kl``. ``rollout_is_weights`` (from ``mismatch.py``) multiply the
per-token loss. Aggregation takes the global normalizers described in ``aggregation.py``.
"""
from __future__ import annotations

from typing import Any

import torch

from .aggregation import Count, aggregate_loss, sequence_weights
from .metrics import LOG_RATIO_BOUND, clip_fraction, log_ratio, ppo_kl
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


class _DualClipPPO(torch.autograd.Function):
    """Dual-clip PPO in whole-tensor passes over three reused buffers, its gradient found on the way.

    Per token, with u = A r the unclipped objective, the objective is
        o = max(min(u, A clip(r, 1 - low, 1 + high)), min(A c, 0)),
    PPO's clipped objective floored at A c where A < 0 (Ye et al. 2020). Its derivative in log pi is
    u where o == u and the log-ratio clamp passes it (|log r| <= bound), else 0; the loss is
    -sum_t W_t o_t with W = mask x sequence weight x IS weight. Autograd through the same formula
    keeps a dozen [batch, len] temporaries; on CPU each fresh one costs more than its arithmetic.
    """

    @staticmethod
    def forward(ctx, log_prob, old_log_prob, advantages, response_mask, weights, rollout_is_weights,
                low, high, clip_ratio_c):
        unclipped = torch.sub(log_prob, old_log_prob)
        ratio = unclipped.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
        wants_gradient = ctx.needs_input_grad[0]
        clamped = torch.ne(ratio, unclipped) if wants_gradient else None
        log_ratio_sum = torch.mul(ratio, response_mask, out=unclipped).sum()
        torch.mul(advantages, ratio.exp_(), out=unclipped)
        objective = torch.clamp(ratio, 1 - low, 1 + high).mul_(advantages)
        torch.minimum(unclipped, objective, out=objective)
        dual_clip_bound = torch.mul(advantages, clip_ratio_c, out=ratio).clamp_(max=0)
        torch.maximum(objective, dual_clip_bound, out=objective)
        valid = response_mask.bool()
        flag = torch.lt(objective, unclipped)
        clipped = torch.count_nonzero(flag.logical_and_(valid))  # a bool .sum() would copy to int64 first
        lower_clipped = torch.count_nonzero(torch.gt(objective, unclipped, out=flag).logical_and_(valid))
        if wants_gradient:  # where the gradient is 0: clipped, or the log-ratio clamped
            torch.ne(objective, unclipped, out=flag).logical_or_(clamped)
        token_weights = torch.mul(response_mask, weights.unsqueeze(-1), out=ratio)
        if rollout_is_weights is not None:
            token_weights.mul_(rollout_is_weights)
        loss = objective.mul_(token_weights).sum().neg_()
        if wants_gradient:
            ctx.gradient = token_weights.mul_(unclipped).masked_fill_(flag, 0.0).neg_()
            ctx.dtype = log_prob.dtype
        ctx.mark_non_differentiable(clipped, lower_clipped, log_ratio_sum)
        return loss, clipped, lower_clipped, log_ratio_sum

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        gradient = ctx.gradient.mul(grad_loss).to(ctx.dtype)
        return gradient, None, None, None, None, None, None, None, None


@register_policy_loss("vanilla", "ppo")
def ppo_clip_loss(*, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                  response_mask: torch.Tensor, clip_ratio: float = 0.2, clip_ratio_low: float | None = None,
                  clip_ratio_high: float | None = None, clip_ratio_c: float = 3.0,
                  loss_agg_mode: str = "token-mean", rollout_is_weights: torch.Tensor | None = None,
                  global_token_count: Count = None, global_seq_count: Count = None,
                  loss_scale_factor: Count = None) -> LossAndMetrics:
    """PPO clip, asymmetric bounds (DAPO clip-higher), dual-clip for negative advantages.

    L = max(-A r, -A clip(r, 1-low, 1+high)); for A < 0 it is further capped at -A c (Ye et al. 2020).
    The gradient flows into ``log_prob`` only (old log-probs, advantages and IS weights are data).
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 for dual-clip PPO, got {clip_ratio_c}")
    low, high = _clip_bounds(clip_ratio, clip_ratio_low, clip_ratio_high)
    weights = sequence_weights(response_mask, loss_agg_mode, global_token_count=global_token_count,
                               global_seq_count=global_seq_count, loss_scale_factor=loss_scale_factor)
    detached = None if rollout_is_weights is None else rollout_is_weights.detach()
    loss, clipped, lower_clipped, log_ratio_sum = _DualClipPPO.apply(
        log_prob, old_log_prob.detach(), advantages.detach(), response_mask, weights, detached,
        low, high, clip_ratio_c)
    tokens = response_mask.sum().clamp(min=1)
    return loss, {"pg_clipfrac": clipped / tokens, "pg_clipfrac_lower": lower_clipped / tokens,
                  "ppo_kl": -log_ratio_sum / tokens}


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
    # Unclamped, as the paper's s_i: exp only follows the mean and the bound below, so nothing overflows.
    token_log_ratio = log_prob - old_log_prob
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
