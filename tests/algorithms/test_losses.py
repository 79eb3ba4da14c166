"""Policy losses, value loss, entropy and KL: hand values, papers' gradients, on-policy sanity."""
import math

import pytest
import torch

from harness.algorithms import (AGGREGATION_MODES, actor_loss, aggregate_loss, apply_kl_penalty,
                                build_kl_controller, compute_policy_loss, entropy_from_logits, kl_loss, kl_penalty,
                                value_loss)
from harness.algorithms.registry import UnknownNameError

from . import reference


def ppo_inputs(ratios, advantages, **extra):
    log_prob = torch.log(torch.tensor([ratios]))
    return dict(old_log_prob=torch.zeros_like(log_prob), log_prob=log_prob,
                advantages=torch.tensor([advantages]), response_mask=torch.ones_like(log_prob), **extra)


def test_ppo_clip_dual_clip_by_hand():
    # clip 0.2, c = 3. Per token, loss = max(-A r, -A clip(r)) (then min(., -A c) when A < 0):
    #  A=+1 r=1.5: max(-1.5, -1.2) = -1.2   clipped
    #  A=-1 r=0.5: max( 0.5,  0.8) =  0.8   clipped
    #  A=+1 r=0.9: max(-0.9, -0.9) = -0.9
    #  A=-1 r=5.0: max( 5.0,  1.2) =  5.0 -> dual clip min(5, 3) = 3   lower-clipped
    # token-mean = (-1.2 + 0.8 - 0.9 + 3) / 4 = 0.425; ppo_kl = -log(1.5*0.5*0.9*5) / 4.
    loss, metrics = compute_policy_loss("vanilla", **ppo_inputs([1.5, 0.5, 0.9, 5.0], [1.0, -1.0, 1.0, -1.0],
                                                              clip_ratio=0.2, clip_ratio_c=3.0))
    assert loss.item() == pytest.approx(0.425, abs=1e-6)
    assert metrics["pg_clipfrac"].item() == pytest.approx(0.5)
    assert metrics["pg_clipfrac_lower"].item() == pytest.approx(0.25)
    assert metrics["ppo_kl"].item() == pytest.approx(-math.log(3.375) / 4, abs=1e-6)


def test_clip_higher_is_asymmetric():
    # DAPO: low 0.2, high 0.28 -> r = 1.5 with A > 0 is clipped at 1.28, r = 0.5 with A < 0 at 0.8.
    loss, _ = compute_policy_loss("ppo", **ppo_inputs([1.5, 0.5], [1.0, -1.0], clip_ratio_low=0.2,
                                                      clip_ratio_high=0.28))
    assert loss.item() == pytest.approx((-1.28 + 0.8) / 2, abs=1e-6)


def test_ppo_gradient_vanishes_only_where_clipped():
    inputs = ppo_inputs([1.5, 1.1], [1.0, 1.0])
    inputs["log_prob"].requires_grad_(True)
    loss, _ = compute_policy_loss("vanilla", **inputs)
    loss.backward()
    # d(-A r)/d log pi = -A r for the unclipped token, 0 for the clipped one; token-mean halves it.
    assert torch.allclose(inputs["log_prob"].grad, torch.tensor([[0.0, -1.1 / 2]]))


@pytest.mark.parametrize("mode", AGGREGATION_MODES.names())
def test_ppo_loss_equals_the_term_by_term_formula(mode):
    # Every branch: clipped above and below, dual-clipped, A = 0, |log r| > 20 (clamped, no gradient),
    # IS weights, a fully padded row; value, gradient and metrics equal the plain formula's.
    generator = torch.Generator().manual_seed(7)
    old = -torch.rand(6, 40, generator=generator) * 4
    log_prob = old + torch.randn(6, 40, generator=generator) * 0.8
    log_prob[0, :3] = old[0, :3] + torch.tensor([25.0, -25.0, 20.0])
    advantages = torch.randn(6, 40, generator=generator)
    advantages[1, :10] = 0.0
    mask = (torch.rand(6, 40, generator=generator) > 0.2).float()
    mask[5] = 0.0
    weights = torch.rand(6, 40, generator=generator) * 2
    settings = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, loss_agg_mode=mode,
                    global_token_count=500, global_seq_count=9, loss_scale_factor=64)
    ours_log_prob = log_prob.clone().requires_grad_(True)
    loss, metrics = compute_policy_loss("vanilla", old_log_prob=old, log_prob=ours_log_prob, advantages=advantages,
                                        response_mask=mask, rollout_is_weights=weights, **settings)
    loss.backward()
    plain_log_prob = log_prob.clone().requires_grad_(True)
    losses = reference.ppo_dual_clip_losses(old, plain_log_prob, advantages, 0.2, 0.28, 3.0)
    plain = aggregate_loss(losses * weights, mask, mode, **{k: v for k, v in settings.items() if k.startswith(
        ("global", "loss_scale"))})
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6, abs=1e-7)
    assert torch.allclose(ours_log_prob.grad, plain_log_prob.grad, rtol=1e-6, atol=1e-9)
    assert ours_log_prob.grad[0, :2].abs().max() == 0  # clamped log-ratios pass no gradient
    ratio = torch.exp(torch.clamp(log_prob - old, -20, 20))
    clipped = ((advantages > 0) & (ratio > 1.28)) | ((advantages < 0) & (ratio < 0.8))
    lower = (advantages < 0) & (ratio > 3.0)
    tokens = mask.sum()
    assert metrics["pg_clipfrac"].item() == pytest.approx(((clipped * mask).sum() / tokens).item())
    assert metrics["pg_clipfrac_lower"].item() == pytest.approx(((lower * mask).sum() / tokens).item())
    assert metrics["ppo_kl"].item() == pytest.approx((-(torch.log(ratio) * mask).sum() / tokens).item(), rel=1e-6)


def test_ppo_loss_gradient_follows_the_log_prob_dtype_and_a_second_backward():
    log_prob = torch.log(torch.tensor([[1.1, 0.9]])).to(torch.bfloat16).requires_grad_(True)
    loss, _ = compute_policy_loss("vanilla", old_log_prob=torch.zeros(1, 2), log_prob=log_prob,
                                  advantages=torch.tensor([[1.0, -1.0]]), response_mask=torch.ones(1, 2))
    (2 * loss).backward(retain_graph=True)
    first = log_prob.grad.clone()
    loss.backward()
    assert log_prob.grad.dtype == torch.bfloat16
    assert torch.allclose(log_prob.grad.float(), 1.5 * first.float(), atol=1e-2)  # bf16 accumulation


def test_gspo_by_hand_and_gradient():
    # Sequence log-ratios 0.1 and 0.3 -> s = exp(0.2) = 1.2214. With clip 0.1 it is clipped at 1.1;
    # with clip 0.5 the gradient per token is -A s / |y| (GSPO-token, seq-mean-token-mean).
    log_prob = torch.tensor([[0.1, 0.3]], requires_grad=True)
    inputs = dict(old_log_prob=torch.zeros(1, 2), log_prob=log_prob, advantages=torch.ones(1, 2),
                  response_mask=torch.ones(1, 2))
    loss, metrics = compute_policy_loss("gspo", clip_ratio=0.1, **inputs)
    assert loss.item() == pytest.approx(-1.1, abs=1e-6) and metrics["pg_clipfrac"].item() == 1.0
    loss, metrics = compute_policy_loss("gspo", clip_ratio=0.5, **inputs)
    assert loss.item() == pytest.approx(-math.exp(0.2), abs=1e-6) and metrics["pg_clipfrac"].item() == 0.0
    loss.backward()
    assert torch.allclose(log_prob.grad, torch.full((1, 2), -math.exp(0.2) / 2))


def test_gspo_sequence_ratio_is_the_geometric_mean_of_unclamped_ratios():
    # Token log-ratios -30 and 0.1: s = exp(-14.95), as the paper and verl define it (a per-token
    # clamp at -20 would give exp(-9.95)). A = 1, clip 0.2: loss max(-s, -0.8) = -s.
    log_prob = torch.tensor([[-30.0, 0.1]])
    loss, metrics = compute_policy_loss("gspo", old_log_prob=torch.zeros(1, 2), log_prob=log_prob,
                                        advantages=torch.ones(1, 2), response_mask=torch.ones(1, 2))
    assert loss.item() == pytest.approx(-math.exp(-14.95), rel=1e-4)
    assert metrics["ppo_kl"].item() == pytest.approx(14.95, rel=1e-6)


def test_cispo_reports_where_the_lower_bound_clips():
    # Ratios 0.5, 1.0, 1.5 with bounds [0.8, 1.28]: 0.5 is clipped below, 1.5 above.
    loss, metrics = compute_policy_loss("cispo", old_log_prob=torch.zeros(1, 3),
                                        log_prob=torch.log(torch.tensor([[0.5, 1.0, 1.5]])),
                                        advantages=torch.ones(1, 3), response_mask=torch.ones(1, 3),
                                        clip_ratio_low=0.2, clip_ratio_high=0.28)
    assert metrics["pg_clipfrac"].item() == pytest.approx(2 / 3)
    assert metrics["pg_clipfrac_lower"].item() == pytest.approx(1 / 3)


def test_cispo_keeps_gradient_with_clipped_weight():
    # Ratios 1.5 and 0.5, bounds [0.8, 1.28]: the IS weights are 1.28 and 0.8, detached, and
    # L = -A w log pi: gradient -A w / N on every token, none is dropped (unlike PPO's clip).
    log_prob = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_(True)
    loss, metrics = compute_policy_loss("cispo", old_log_prob=torch.zeros(1, 2), log_prob=log_prob,
                                        advantages=torch.tensor([[1.0, -2.0]]), response_mask=torch.ones(1, 2),
                                        clip_ratio_low=0.2, clip_ratio_high=0.28)
    loss.backward()
    assert torch.allclose(log_prob.grad, torch.tensor([[-1.0 * 1.28 / 2, 2.0 * 0.8 / 2]]))
    assert metrics["pg_clipfrac"].item() == 1.0


@pytest.mark.parametrize("loss_mode", ["vanilla", "gspo", "cispo"])
def test_on_policy_ratio_one_no_clip_zero_kl(loss_mode):
    generator = torch.Generator().manual_seed(0)
    log_prob = -torch.rand(6, 9, generator=generator) * 5
    mask = (torch.rand(6, 9, generator=generator) > 0.3).float()
    advantages = torch.randn(6, 9, generator=generator)
    loss, metrics = compute_policy_loss(loss_mode, old_log_prob=log_prob.clone(), log_prob=log_prob,
                                        advantages=advantages, response_mask=mask, clip_ratio=1e-4)
    assert metrics["ppo_kl"].item() == 0.0
    assert metrics["pg_clipfrac"].item() == 0.0
    assert metrics["pg_clipfrac_lower"].item() == 0.0
    if loss_mode != "cispo":  # CISPO's value is -A log pi; its gradient equals PPO's at ratio 1
        assert loss.item() == pytest.approx((-(advantages * mask).sum() / mask.sum()).item()
                                            if loss_mode == "vanilla" else
                                            (-((advantages * mask).sum(-1) / mask.sum(-1)).mean()).item(), abs=1e-6)


def test_on_policy_gradients_agree_across_losses():
    log_prob = -torch.rand(3, 4) - 0.1
    advantages = torch.randn(3, 4)
    grads = {}
    for mode in ["vanilla", "cispo"]:
        current = log_prob.clone().requires_grad_(True)
        loss, _ = compute_policy_loss(mode, old_log_prob=log_prob, log_prob=current, advantages=advantages,
                                      response_mask=torch.ones(3, 4))
        loss.backward()
        grads[mode] = current.grad
    assert torch.allclose(grads["vanilla"], grads["cispo"])


def test_rollout_is_weights_multiply_the_token_loss():
    weights = torch.tensor([[2.0, 0.0]])
    loss, _ = compute_policy_loss("vanilla", **ppo_inputs([1.0, 1.0], [1.0, 1.0], rollout_is_weights=weights))
    assert loss.item() == pytest.approx(-1.0)  # (-1*2 + -1*0) / 2


def test_dual_clip_needs_c_above_one():
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        compute_policy_loss("vanilla", **ppo_inputs([1.0], [1.0], clip_ratio_c=0.5))


def test_unknown_loss_mode_lists_registered_ones():
    with pytest.raises(UnknownNameError, match="'ppo2'; registered: vanilla, gspo, cispo"):
        compute_policy_loss("ppo2", **ppo_inputs([1.0], [1.0]))


def test_value_loss_by_hand():
    # V = 1, V_old = 0, R = 2, clip 0.5: clipped V = 0.5; 0.5 * max((1-2)^2, (0.5-2)^2) = 1.125.
    # Second token: V = 0.2 within the clip: 0.5 * (0.2 - 1)^2 = 0.32.
    loss, metrics = value_loss(vpreds=torch.tensor([[1.0, 0.2]]), returns=torch.tensor([[2.0, 1.0]]),
                               values=torch.tensor([[0.0, 0.0]]), response_mask=torch.ones(1, 2),
                               cliprange_value=0.5)
    assert loss.item() == pytest.approx((1.125 + 0.32) / 2)
    assert metrics["vf_clipfrac"].item() == pytest.approx(0.5)


def test_entropy_and_actor_loss():
    # Uniform over 4 tokens: log 4; one-hot-ish: ~0.
    entropy = entropy_from_logits(torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(entropy, torch.tensor([math.log(4), 0.0]), atol=1e-5)
    total = actor_loss(torch.tensor(1.0), entropy_loss=torch.tensor(2.0), entropy_coeff=0.1,
                       kl_loss=torch.tensor(0.5), kl_loss_coef=0.2)
    assert total.item() == pytest.approx(1.0 - 0.2 + 0.1)


# ---- KL -------------------------------------------------------------------------------------

def test_kl_estimators_by_hand():
    # pi = 0.5, pi_ref = 0.25: k1 = log 2; k2 = (log 2)^2 / 2; k3 = r - 1 - log r with r = 0.5.
    log_prob, ref = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    expected = {"k1": math.log(2), "kl": math.log(2), "abs": math.log(2), "k2": math.log(2) ** 2 / 2,
                "mse": math.log(2) ** 2 / 2, "k3": 0.5 - 1 + math.log(2), "low_var_kl": 0.5 - 1 + math.log(2)}
    for name, value in expected.items():
        assert kl_penalty(log_prob, ref, name).item() == pytest.approx(value, abs=1e-6), name
    assert kl_penalty(ref, log_prob, "abs").item() == pytest.approx(math.log(2), abs=1e-6)


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    # E_{x~pi}[k1] = E_{x~pi}[k3] = KL(pi || pi_ref) (Schulman, "Approximating KL divergence").
    pi = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.1]), 0)
    ref = torch.softmax(torch.tensor([1.0, 0.0, -0.5, 0.2]), 0)
    exact = (pi * (pi.log() - ref.log())).sum()
    for name in ["k1", "k3"]:
        assert (pi * kl_penalty(pi.log(), ref.log(), name)).sum().item() == pytest.approx(exact.item(), abs=1e-6)


def test_kl_loss_aggregates_the_estimator():
    log_prob = torch.tensor([[0.0, -1.0, 7.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss = kl_loss(log_prob=log_prob, ref_log_prob=torch.zeros(1, 3), response_mask=mask, kl_loss_type="k2")
    assert loss.item() == pytest.approx(0.25)  # (0 + 0.5) / 2


def test_kl_in_reward_with_fixed_and_adaptive_controllers():
    # scores 0, 0, 1; k1 = 0.1, 0.2, 0.3; beta 0.5 -> rewards -0.05, -0.1, 0.85; batch KL 0.2.
    inputs = dict(token_level_scores=torch.tensor([[0.0, 0.0, 1.0]]), old_log_prob=torch.tensor([[0.1, 0.2, 0.3]]),
                  ref_log_prob=torch.zeros(1, 3), response_mask=torch.ones(1, 3))
    fixed = build_kl_controller("fixed", kl_coef=0.5)
    rewards, metrics = apply_kl_penalty(kl_ctrl=fixed, kl_penalty_type="k1", **inputs)
    assert torch.allclose(rewards, torch.tensor([[-0.05, -0.1, 0.85]]))
    assert metrics["actor/reward_kl_penalty"].item() == pytest.approx(0.2)
    assert fixed.value == 0.5
    # Adaptive: KL 0.2 vs target 0.1 -> error clipped to 0.2; beta *= 1 + 0.2 * n_steps(1) / horizon(10).
    adaptive = build_kl_controller("adaptive", kl_coef=0.5, target_kl=0.1, horizon=10)
    apply_kl_penalty(kl_ctrl=adaptive, **inputs)
    assert adaptive.value == pytest.approx(0.5 * 1.02)
    adaptive.update(0.0, n_steps=10)  # KL far below target: error -0.2 over a whole horizon
    assert adaptive.value == pytest.approx(0.5 * 1.02 * 0.8)


def test_unknown_kl_names_list_registered_ones():
    with pytest.raises(UnknownNameError, match="'k4'; registered: k1, abs, k2, k3"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")
    with pytest.raises(UnknownNameError, match="'pid'; registered: fixed, adaptive"):
        build_kl_controller("pid")
