"""Training-inference mismatch correction: the rollout engine (SGLang, bf16/fp8 kernels) samples
from pi_rollout, the trainer computes pi_old for the same tokens, and the two differ.

The ratio rho_t = pi_old(y_t) / pi_rollout(y_t) corrects the off-policy gap:
- ``tis``: token-level truncated IS, weight min(rho_t, C) (Yao et al. 2025, "Your efficient RL
  framework secretly brings you off-policy RL training"). Bounded weights, drops nothing: the
  default whenever rollout log-probs are available.
- ``seq_tis``: the same with the sequence ratio prod_t rho_t.
- ``token_mis`` / ``seq_mis``: masked IS, weight rho where it lies in [lower, C], 0 outside.
- ``token_rs`` / ``seq_rs`` / ``geo_rs``: rejection, the token / sequence leaves the loss mask
  (the sequence test uses the product or the geometric mean of rho_t); weights stay 1.
Config: ``rollout_is`` (the mode), ``rollout_is_threshold`` (C), ``rollout_is_threshold_lower``
(default 1/C). The weights are detached; pass them as ``rollout_is_weights`` to the policy loss and
use the returned mask as its ``response_mask``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .metrics import LOG_RATIO_BOUND
from .registry import Registry
from .tensor_ops import check_finite, masked_mean, zero_padding

MISMATCH_CORRECTIONS = Registry("mismatch correction (rollout_is)")
DEFAULT_MISMATCH_CORRECTION = "tis"
DEFAULT_IS_THRESHOLD = 2.0


class MismatchCorrection(NamedTuple):
    weights: torch.Tensor | None  # [batch, len] per-token loss weights, None when nothing reweights
    response_mask: torch.Tensor  # the loss mask after rejection
    metrics: dict[str, torch.Tensor]


# Every correction is ``(log_rho, response_mask, upper, lower) -> (weights or None, mask)``, with
# log_rho the per-token log(pi_old / pi_rollout), 0 on padding; ``upper`` is C, ``lower`` the floor.
Correction = tuple[torch.Tensor | None, torch.Tensor]


def _token_log_rho(old_log_prob: torch.Tensor, rollout_log_probs: torch.Tensor,
                   response_mask: torch.Tensor) -> torch.Tensor:
    return zero_padding(torch.clamp(old_log_prob - rollout_log_probs, -LOG_RATIO_BOUND, LOG_RATIO_BOUND),
                        response_mask)


def _sequence_log_rho(log_rho: torch.Tensor) -> torch.Tensor:
    """Per-token log rho summed over the sequence (padding holds 0), broadcast back to tokens."""
    return torch.clamp(log_rho.sum(-1), -LOG_RATIO_BOUND, LOG_RATIO_BOUND).unsqueeze(-1).expand_as(log_rho)


def _in_bounds(log_rho: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    rho = torch.exp(log_rho)
    return (rho >= lower) & (rho <= upper)


@MISMATCH_CORRECTIONS.register("none")
def no_correction(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    return None, response_mask


@MISMATCH_CORRECTIONS.register("tis")
def token_truncated_is(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    return zero_padding(torch.exp(log_rho).clamp(max=upper), response_mask), response_mask


@MISMATCH_CORRECTIONS.register("seq_tis")
def sequence_truncated_is(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    return zero_padding(torch.exp(_sequence_log_rho(log_rho)).clamp(max=upper),
                        response_mask), response_mask


@MISMATCH_CORRECTIONS.register("token_mis")
def token_masked_is(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    keep = _in_bounds(log_rho, lower, upper)
    return zero_padding(torch.exp(log_rho) * keep, response_mask), response_mask


@MISMATCH_CORRECTIONS.register("seq_mis")
def sequence_masked_is(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    sequence_log_rho = _sequence_log_rho(log_rho)
    keep = _in_bounds(sequence_log_rho, lower, upper)
    return zero_padding(torch.exp(sequence_log_rho) * keep, response_mask), response_mask


@MISMATCH_CORRECTIONS.register("token_rs")
def token_rejection(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    return None, response_mask.bool() & _in_bounds(log_rho, lower, upper)


@MISMATCH_CORRECTIONS.register("seq_rs")
def sequence_rejection(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    return None, response_mask.bool() & _in_bounds(_sequence_log_rho(log_rho), lower, upper)


@MISMATCH_CORRECTIONS.register("geo_rs")
def geometric_rejection(log_rho: torch.Tensor, response_mask: torch.Tensor, upper: float, lower: float) -> Correction:
    """Long sequences make the product ratio explode; the per-token geometric mean does not."""
    lengths = response_mask.sum(-1, keepdim=True).clamp(min=1).to(log_rho.dtype)
    geometric_log_rho = (log_rho.sum(-1, keepdim=True) / lengths).expand_as(log_rho)
    return None, response_mask.bool() & _in_bounds(geometric_log_rho, lower, upper)


def mismatch_metrics(old_log_prob: torch.Tensor, rollout_log_probs: torch.Tensor, response_mask: torch.Tensor,
                     corrected_mask: torch.Tensor | None = None, weights: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """|delta log-prob| mean/max, k3 KL(rollout || old), and the share of tokens the correction removed."""
    delta = zero_padding(old_log_prob - rollout_log_probs, response_mask)
    valid = response_mask.bool()
    log_r = torch.clamp(-delta, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    metrics = {
        "mismatch/abs_log_prob_diff_mean": masked_mean(delta.abs(), response_mask),
        "mismatch/abs_log_prob_diff_max": delta.abs().max() if valid.any() else delta.new_zeros(()),
        "mismatch/k3_kl": masked_mean(torch.exp(log_r) - log_r - 1, response_mask),
    }
    removed = valid & ~(corrected_mask.bool() if corrected_mask is not None else valid)
    if weights is not None:
        removed |= valid & (weights == 0)
        metrics["mismatch/is_weight_mean"] = masked_mean(weights, response_mask)
    metrics["mismatch/masked_fraction"] = masked_mean(removed.to(delta.dtype), response_mask)
    return {key: value.detach() for key, value in metrics.items()}


def correct_mismatch(*, old_log_prob: torch.Tensor, rollout_log_probs: torch.Tensor | None,
                     response_mask: torch.Tensor, rollout_is: str = DEFAULT_MISMATCH_CORRECTION,
                     rollout_is_threshold: float = DEFAULT_IS_THRESHOLD,
                     rollout_is_threshold_lower: float | None = None) -> MismatchCorrection:
    """Weights and mask for the policy loss. Without rollout log-probs there is nothing to correct."""
    if rollout_log_probs is None:
        return MismatchCorrection(None, response_mask, {})
    correction = MISMATCH_CORRECTIONS.get(rollout_is)
    if rollout_is_threshold <= 0:
        raise ValueError(f"rollout_is_threshold must be > 0, got {rollout_is_threshold}")
    lower = 1.0 / rollout_is_threshold if rollout_is_threshold_lower is None else rollout_is_threshold_lower
    check_finite("rollout_log_probs", rollout_log_probs)
    log_rho = _token_log_rho(old_log_prob.detach(), rollout_log_probs, response_mask)
    weights, corrected_mask = correction(log_rho, response_mask, rollout_is_threshold, lower)
    metrics = mismatch_metrics(old_log_prob.detach(), rollout_log_probs, response_mask, corrected_mask, weights)
    return MismatchCorrection(weights, corrected_mask.to(response_mask.dtype), metrics)
