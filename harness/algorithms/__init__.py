"""algorithms room: advantages, policy/value losses, KL, loss aggregation, mismatch correction.

Pure tensor math on ``[batch, response_len]`` tensors with a ``response_mask``; imports only torch.
Every variant is a function in a registry, looked up by the name the config gives, or by a
``module:function`` path for a user's own (``python -m harness.algorithms`` lists the names).

verl config key -> what it selects here
---------------------------------------
algorithm.adv_estimator            ``compute_advantage(adv_estimator, **inputs)`` / ``ADV_ESTIMATORS``:
                                   gae, grpo, rloo, reinforce_plus_plus, reinforce_plus_plus_baseline,
                                   remax, opo, gpg, prime, or ``module:function``
algorithm.norm_adv_by_std_in_grpo  ``norm_adv_by_std_in_grpo`` of grpo (False: Dr. GRPO)
algorithm.gamma, algorithm.lam     ``gamma``, ``lam`` of gae; ``gamma`` of reinforce_plus_plus
(verl ``index`` / ``uid``)         ``group_index``: one group id per sample, any ids
algorithm.use_kl_in_reward         call ``apply_kl_penalty`` before the estimator
algorithm.kl_penalty               ``kl_penalty_type`` of ``apply_kl_penalty`` (a ``KL_ESTIMATORS`` name)
algorithm.kl_ctrl.type             ``build_kl_controller(type=...)``: fixed, adaptive
algorithm.kl_ctrl.kl_coef, .target_kl, .horizon
                                   ``build_kl_controller(kl_coef=, target_kl=, horizon=)``
actor_rollout_ref.actor.policy_loss.loss_mode
                                   ``compute_policy_loss(loss_mode, **inputs)`` / ``POLICY_LOSSES``:
                                   vanilla (alias ppo), gspo, cispo, or ``module:function``
actor_rollout_ref.actor.clip_ratio, clip_ratio_low, clip_ratio_high, clip_ratio_c
                                   same-named arguments of the policy losses (low/high default to clip_ratio)
actor_rollout_ref.actor.loss_agg_mode
                                   ``loss_agg_mode`` of every loss / ``aggregate_loss``: token-mean,
                                   seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm
actor_rollout_ref.actor.loss_scale_factor
                                   ``loss_scale_factor`` (seq-mean-token-sum-norm's constant length)
(global batch info)                ``global_token_count``, ``global_seq_count`` from ``global_batch_counts``
actor_rollout_ref.actor.use_kl_loss, kl_loss_coef, kl_loss_type
                                   ``kl_loss(kl_loss_type=...)``, then ``actor_loss(kl_loss_coef=...)``;
                                   types k1 (kl), abs, k2 (mse), k3 (low_var_kl)
actor_rollout_ref.actor.entropy_coeff
                                   ``actor_loss(entropy_coeff=...)`` with ``entropy_from_logits``
critic.cliprange_value             ``cliprange_value`` of ``value_loss``
algorithm.rollout_is, rollout_is_threshold, rollout_is_threshold_lower
                                   ``correct_mismatch(rollout_is=..., ...)`` / ``MISMATCH_CORRECTIONS``:
                                   none, tis (default), seq_tis, token_mis, seq_mis, token_rs, seq_rs, geo_rs
algorithm.filter_groups.enable     DAPO dynamic sampling: ``informative_group_mask``,
(+ data.gen_batch_size, max_num_gen_batches)  ``oversampled_prompt_count``, ``take_full_groups``
reward_model.overlong_buffer.enable, len, penalty_factor
                                   ``overlong_reward_penalty(overlong_buffer_len=, overlong_penalty_factor=)``
algorithm.reward_dpo_coef, reward_gt_coef, reward_model.model.beta_train (verl's PRIME recipe)
                                   ``reward_dpo_coef``, ``reward_gt_coef``, ``prime_beta`` of prime

Where this differs from verl 0.9.1 (``verl.trainer.ppo.core_algos``), on purpose
-------------------------------------------------------------------------------
Everything else agrees with verl to <= 1e-6 (float32) on the same inputs, right-padded or with
masked stretches inside responses: ``python benchmarks/algorithms_bench.py --verl-site ...``.
As verl: outcome estimators sum ``token_level_rewards`` over the whole row (they hold 0 outside
the mask); a masked stretch (multi-turn tool output) carries REINFORCE++ / ReMax / PRIME returns
and GAE across it; GSPO's sequence ratio takes the unclamped mean log-ratio; REINFORCE++-baseline
returns its whitened advantages; a sample alone in its group gets baseline 0 in
REINFORCE++-baseline and OPO.

====================  ==============================  ============================  ==============================
what                  verl 0.9.1                      here                          why
====================  ==============================  ============================  ==============================
values on masked      GAE: the carried advantage,     0 in the advantages and       nothing reads them (losses
tokens                returns A + V; ReMax: the       returns of every estimator    mask them); zeros keep later
                      reward-to-go; whitening leaves                                sums and metrics clean
                      them non-zero

a group of one        mean 0, std 1: GRPO trains on   error naming the sample       there is no baseline: n = 1 is
sample in grpo,       the raw reward (RLOO: 0 or the  (rollout.n > 1)               a config error, not a silent
rloo, prime           raw reward)                                                   REINFORCE

gpg's alpha           B / samples with a non-zero     B / samples in groups whose   the paper (Chu et al. 2025):
                      reward; a sample alone gets     rewards differ; a sample      an all-equal group, one sample
                      alpha x its raw reward          alone gets 0                  included, carries no signal

prime                 verl's PRIME recipe             the paper's leave-one-out     Cui et al. 2025, eq. 5
                                                      baselines, process and
                                                      outcome

CISPO                 0 (a placeholder)               share of tokens whose IS      the lower bound is the knob
pg_clipfrac_lower                                     weight is clipped at 1 -      the paper drops: this shows
                                                      clip_ratio_low                whether it acts

PPO gradient where r  half (torch.maximum splits      full                          a measure-zero tie; the fused
== clip_ratio_c       ties)                                                         loss has one rule
exactly (A < 0)

what the PPO          log_prob, and old_log_prob if   log_prob only                 old log-probs, advantages and
gradient reaches      it requires grad                                              IS weights are data

whitening fewer than  raises                          variance 0: the whitened      a degenerate micro-batch is
2 tokens                                              values are 0                  not an error

mismatch correction   rollout_correction.rollout_is:  rollout_is = tis, cap 2,      TIS only caps weights, and
                      null (off); cap 2.0 when set    whenever rollout log-probs    rollout engines (bf16/fp8
                                                      are given                     kernels) are always a little
                                                                                    off-policy

loss_agg_mode=token-  provided                        not provided                  token-sum's scale depends on
sum, kl k3+                                                                         how DP ranks average gradients
(straight-through)                                                                  (verl: x dp_size); k3+ changes
                                                                                    only gradients: add them with
                                                                                    a recipe that needs them
====================  ==============================  ============================  ==============================
"""
from .advantages import (ADV_ESTIMATORS, compute_advantage, discounted_returns, implicit_process_rewards,
                         register_adv_est)
from .aggregation import AGGREGATION_MODES, aggregate_loss, global_batch_counts, sequence_weights
from .dapo import informative_group_mask, oversampled_prompt_count, overlong_reward_penalty, take_full_groups
from .kl import (KL_CONTROLLERS, KL_ESTIMATORS, AdaptiveKLController, FixedKLController, apply_kl_penalty,
                 build_kl_controller, kl_loss, kl_penalty)
from .metrics import (batch_metrics, clip_fraction, entropy_mean, group_reward_metrics, masked_statistics,
                      ppo_kl)
from .mismatch import (DEFAULT_MISMATCH_CORRECTION, MISMATCH_CORRECTIONS, MismatchCorrection,
                       correct_mismatch, mismatch_metrics)
from .policy_losses import (POLICY_LOSSES, actor_loss, compute_policy_loss, entropy_from_logits,
                            register_policy_loss, value_loss)
from .registry import Registry, UnknownNameError, load_callable
from .tensor_ops import masked_mean, masked_sum, masked_whiten

__all__ = [
    "ADV_ESTIMATORS", "AGGREGATION_MODES", "AdaptiveKLController", "DEFAULT_MISMATCH_CORRECTION",
    "FixedKLController", "KL_CONTROLLERS", "KL_ESTIMATORS", "MISMATCH_CORRECTIONS", "MismatchCorrection",
    "POLICY_LOSSES", "Registry", "UnknownNameError", "actor_loss", "aggregate_loss", "apply_kl_penalty",
    "batch_metrics", "build_kl_controller", "clip_fraction", "compute_advantage", "compute_policy_loss",
    "correct_mismatch", "discounted_returns", "entropy_from_logits", "entropy_mean", "global_batch_counts",
    "group_reward_metrics", "implicit_process_rewards", "informative_group_mask", "kl_loss", "kl_penalty",
    "load_callable", "masked_mean", "masked_statistics", "masked_sum", "masked_whiten", "mismatch_metrics",
    "overlong_reward_penalty", "oversampled_prompt_count", "ppo_kl", "register_adv_est",
    "register_policy_loss", "sequence_weights", "take_full_groups", "value_loss",
]
