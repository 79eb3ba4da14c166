"""KL to the reference policy: per-token estimators, and their two uses.

In the loss (``actor.use_kl_loss``, ``kl_loss_type``, ``kl_loss_coef``): ``kl_loss``.
In the reward (``algorithm.use_kl_in_reward``, ``algorithm.kl_penalty``, ``algorithm.kl_ctrl.*``):
``apply_kl_penalty`` with a fixed or adaptive controller. Estimators follow Schulman's note
"Approximating KL divergence" with log r = log pi_ref - log pi.
"""
from __future__ import annotations

import torch

from .aggregation import Count, aggregate_loss
from .registry import Registry, call_with_accepted_kwargs
from .tensor_ops import check_finite, masked_mean, zero_padding

KL_ESTIMATORS = Registry("KL estimator (kl_loss_type / algorithm.kl_penalty)")
KL_CONTROLLERS = Registry("KL controller (algorithm.kl_ctrl.type)")
K3_LOG_RATIO_BOUND = 20.0
K3_VALUE_BOUND = 10.0  # caps the exp(log r) tail of k3 so one outlier token cannot dominate the loss


@KL_ESTIMATORS.register("k1", "kl")
def kl_k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log pi_ref: unbiased, high variance, can be negative."""
    return log_prob - ref_log_prob


@KL_ESTIMATORS.register("abs")
def kl_abs(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return (log_prob - ref_log_prob).abs()


@KL_ESTIMATORS.register("k2", "mse")
def kl_k2(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k2 = (log pi - log pi_ref)^2 / 2: biased, low variance."""
    return 0.5 * (log_prob - ref_log_prob) ** 2


@KL_ESTIMATORS.register("k3", "low_var_kl")
def kl_k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k3 = r - 1 - log r, r = pi_ref / pi: unbiased and always >= 0 (GRPO's KL)."""
    log_r = torch.clamp(ref_log_prob - log_prob, -K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND)
    return torch.clamp(torch.exp(log_r) - log_r - 1, -K3_VALUE_BOUND, K3_VALUE_BOUND)


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kl_type: str = "low_var_kl") -> torch.Tensor:
    """Per-token KL estimate of the estimator named ``kl_type``."""
    return KL_ESTIMATORS.get(kl_type)(log_prob, ref_log_prob)


def kl_loss(*, log_prob: torch.Tensor, ref_log_prob: torch.Tensor, response_mask: torch.Tensor,
            kl_loss_type: str = "low_var_kl", loss_agg_mode: str = "token-mean",
            global_token_count: Count = None, global_seq_count: Count = None,
            loss_scale_factor: Count = None) -> torch.Tensor:
    """The aggregated KL term of ``use_kl_loss`` (multiply by ``kl_loss_coef``, see ``actor_loss``)."""
    return aggregate_loss(kl_penalty(log_prob, ref_log_prob, kl_loss_type), response_mask, loss_agg_mode,
                          global_token_count=global_token_count, global_seq_count=global_seq_count,
                          loss_scale_factor=loss_scale_factor)


class FixedKLController:
    """kl_coef stays as configured (``algorithm.kl_ctrl.type=fixed``)."""

    def __init__(self, kl_coef: float = 0.001):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """Ziegler et al. 2019: move the coefficient so the observed KL tracks ``target_kl``.

    beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)
    """

    def __init__(self, kl_coef: float = 0.001, target_kl: float = 0.1, horizon: int = 10000):
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL controller needs target_kl > 0 and horizon > 0, "
                             f"got target_kl={target_kl}, horizon={horizon}")
        self.value = kl_coef
        self.target_kl = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target_kl - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon


KL_CONTROLLERS.register("fixed")(FixedKLController)
KL_CONTROLLERS.register("adaptive")(AdaptiveKLController)


def build_kl_controller(type: str = "fixed", kl_coef: float = 0.001, target_kl: float = 0.1,
                        horizon: int = 10000) -> FixedKLController | AdaptiveKLController:
    """From ``algorithm.kl_ctrl.{type, kl_coef, target_kl, horizon}``."""
    settings = {"kl_coef": kl_coef, "target_kl": target_kl, "horizon": horizon}
    return call_with_accepted_kwargs(KL_CONTROLLERS.get(type), settings)


def apply_kl_penalty(*, token_level_scores: torch.Tensor, old_log_prob: torch.Tensor,
                     ref_log_prob: torch.Tensor, response_mask: torch.Tensor,
                     kl_ctrl: FixedKLController | AdaptiveKLController, kl_penalty_type: str = "k1"
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``use_kl_in_reward``: r_t = score_t - beta * KL_t, then the controller sees this batch's KL.

    The batch KL is the mean over sequences of each sequence's token-mean KL.
    """
    check_finite("token_level_scores", token_level_scores)
    token_kl = zero_padding(kl_penalty(old_log_prob, ref_log_prob, kl_penalty_type), response_mask)
    beta = kl_ctrl.value
    token_level_rewards = zero_padding(token_level_scores - beta * token_kl, response_mask)
    current_kl = masked_mean(token_kl, response_mask, dim=-1).mean()
    kl_ctrl.update(float(current_kl), n_steps=token_level_scores.shape[0])
    return token_level_rewards, {"actor/reward_kl_penalty": current_kl,
                                 "actor/reward_kl_penalty_coeff": torch.tensor(beta)}
