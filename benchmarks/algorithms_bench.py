"""harness.algorithms side by side with verl's ``core_algos``, or, without verl, with plain references.

    python benchmarks/algorithms_bench.py --verl-site /path/to/verl-venv/lib/python3.11/site-packages
    python benchmarks/algorithms_bench.py                          # no verl: our plain references
    python benchmarks/algorithms_bench.py --parity-only            # values only, small batches
    python benchmarks/algorithms_bench.py --speed-only --only gae,ppo --repeats 15

verl is imported from ``--verl-site`` (or ``$VERL_SITE``): a site-packages directory of a separate
environment (never this one), appended to ``sys.path`` so this environment's torch runs both sides:

    python3.11 -m venv V && V/bin/pip install torch==2.13.0 && V/bin/pip install --no-deps verl==0.9.1
    V/bin/pip install numpy omegaconf "tensordict<=0.10" packaging ray transformers codetiming orjson
    # optional, for the KL-in-reward rows (verl's ray_trainer): --no-deps torchdata datasets
    #   multiprocess pandas dill xxhash fsspec pyarrow huggingface_hub peft accelerate cachetools
    #   uvicorn fastapi starlette

Parity (with verl): the largest |ours - verl| per function, on valid tokens, for a right-padded
batch, one with holes (a masked stretch inside the response, as multi-turn tool output) and one
with 0/1 outcome rewards where 4 samples are alone in their group.
Speed: GRPO, RLOO, GAE advantages and the PPO clip loss (forward, and forward + backward) on
``--sequences`` x ``--tokens``; every function runs ``--repeats`` times, interleaved with its
counterparts in rotating order so all see the same machine load; min and median seconds and
``ours / theirs`` (the machine is shared: compare ratios of one run, not seconds across runs).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from harness.algorithms import (AGGREGATION_MODES, aggregate_loss, apply_kl_penalty,  # noqa: E402
                                build_kl_controller, compute_advantage, compute_policy_loss,
                                entropy_from_logits, kl_penalty, value_loss)

CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
KL_NAMES = ["k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl"]


# ---- inputs ----------------------------------------------------------------------------------

def make_batch(sequences: int, tokens: int, group_size: int, holes: bool = False, seed: int = 0,
               dense_rewards: bool = False, alone: int = 0) -> dict:
    """Right-padded responses of random lengths (optionally with a masked stretch inside each one);
    the last ``alone`` samples are each alone in their group."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, tokens + 1, (sequences,), generator=generator)
    mask = (torch.arange(tokens) < lengths.unsqueeze(-1)).float()
    if holes:  # tokens [start, start + width) of every response long enough are tool output
        start = torch.randint(1, 4, (sequences,), generator=generator)
        width = torch.randint(1, 5, (sequences,), generator=generator)
        positions = torch.arange(tokens)
        hole = (positions >= start[:, None]) & (positions < (start + width)[:, None]) & \
               (positions < lengths[:, None] - 1)
        mask[hole] = 0.0
    rewards = torch.zeros(sequences, tokens)
    rewards[torch.arange(sequences), lengths - 1] = (torch.rand(sequences, generator=generator) < 0.4).float()
    if dense_rewards:
        rewards = rewards + 0.1 * torch.randn(sequences, tokens, generator=generator)
    rewards = rewards * mask
    # Shuffled group ids, as after dynamic sampling; dense 0..G-1 so verl's vectorized path takes them as they are.
    group_index = torch.arange(sequences // group_size).repeat_interleave(group_size)
    group_index = group_index[torch.randperm(sequences, generator=generator)]
    if alone:
        group_index[-alone:] = sequences + torch.arange(alone)
    old_log_prob = -torch.rand(sequences, tokens, generator=generator) * 4
    log_prob = old_log_prob + 0.3 * torch.randn(sequences, tokens, generator=generator)
    return dict(token_level_rewards=rewards, response_mask=mask, group_index=group_index,
                values=torch.randn(sequences, tokens, generator=generator),
                reward_baselines=torch.rand(sequences, generator=generator),
                advantages=torch.randn(sequences, tokens, generator=generator) * mask,
                old_log_prob=old_log_prob, log_prob=log_prob,
                ref_log_prob=old_log_prob + 0.2 * torch.randn(sequences, tokens, generator=generator),
                returns=torch.randn(sequences, tokens, generator=generator))


# ---- verl ------------------------------------------------------------------------------------

def import_verl(site: str | None):
    if not site:
        return None
    sys.path.append(site)
    try:
        with warnings.catch_warnings():  # verl announces every optional engine it lacks
            warnings.simplefilter("ignore")
            from verl.trainer.ppo import core_algos
            from verl.workers.config import ActorConfig
    except ImportError as error:
        raise SystemExit(f"--verl-site {site}: cannot import verl.trainer.ppo.core_algos ({error})")
    core_algos.ActorConfigForBench = ActorConfig
    return core_algos


def verl_actor_config(verl, **overrides):
    settings = dict(strategy="fsdp", clip_ratio=0.2, clip_ratio_low=CLIP_LOW, clip_ratio_high=CLIP_HIGH,
                    clip_ratio_c=CLIP_C, ppo_micro_batch_size_per_gpu=1, rollout_n=8, ppo_mini_batch_size=8)
    return verl.ActorConfigForBench(**(settings | overrides))


class VerlAlgo:
    """verl's estimators called as its trainer calls them (config objects, numpy index)."""

    def __init__(self, verl):
        self.verl = verl
        from omegaconf import OmegaConf
        self.config = lambda **kw: OmegaConf.create(kw)

    def advantage(self, name: str, batch: dict, **settings):
        verl, index = self.verl, batch["group_index"].numpy()
        rewards, mask = batch["token_level_rewards"], batch["response_mask"]
        config = self.config(gamma=settings.get("gamma", 1.0), norm_adv_by_std_in_grpo=True)
        if name == "gae":
            return verl.compute_gae_advantage_return(rewards, batch["values"], mask, settings["gamma"],
                                                     settings["lam"])
        if name == "remax":
            return verl.compute_remax_outcome_advantage(rewards, batch["reward_baselines"], mask, config=config)
        function = verl.get_adv_estimator_fn(name)
        extra = {} if name == "reinforce_plus_plus" else {"index": index}
        if name.startswith("grpo"):
            extra["norm_adv_by_std_in_grpo"] = settings.get("norm_adv_by_std_in_grpo", True)
        if name.endswith("_vectorized") and name.startswith("grpo"):
            extra["index"] = batch["group_index"]
        return function(token_level_rewards=rewards, response_mask=mask, config=config, **extra)


# ---- parity ----------------------------------------------------------------------------------

def max_valid_diff(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    valid = mask.bool()
    return float((ours.float() - theirs.float())[valid].abs().max()) if valid.any() else 0.0


def parity_rows(verl, batch: dict) -> list[tuple[str, float]]:
    """(function, max |ours - verl|) on valid tokens; losses compare value, gradient and metrics."""
    algo, mask, rows = VerlAlgo(verl), batch["response_mask"], []
    estimators = [("gae g=1 l=1", "gae", "gae", dict(gamma=1.0, lam=1.0)),
                  ("gae g=0.99 l=0.95", "gae", "gae", dict(gamma=0.99, lam=0.95)),
                  ("grpo", "grpo", "grpo", {}), ("grpo (vs grpo_vectorized)", "grpo", "grpo_vectorized", {}),
                  ("grpo no std", "grpo", "grpo", dict(norm_adv_by_std_in_grpo=False)),
                  ("rloo", "rloo", "rloo", {}), ("rloo (vs rloo_vectorized)", "rloo", "rloo_vectorized", {}),
                  ("reinforce++ g=1", "reinforce_plus_plus", "reinforce_plus_plus", dict(gamma=1.0)),
                  ("reinforce++ g=0.99", "reinforce_plus_plus", "reinforce_plus_plus", dict(gamma=0.99)),
                  ("reinforce++-baseline", "reinforce_plus_plus_baseline", "reinforce_plus_plus_baseline", {}),
                  ("remax", "remax", "remax", {}), ("opo", "opo", "opo", {}), ("gpg", "gpg", "gpg", {})]
    for label, ours_name, verl_name, settings in estimators:
        theirs = algo.advantage(verl_name, batch, **settings)
        try:
            ours = compute_advantage(ours_name, **batch, **settings)
        except ValueError:  # a group of one: refused here, verl falls back to mean 0 / std 1
            rows += [(f"{label}: advantages", "refused"), (f"{label}: returns", "refused")]
            continue
        rows.append((f"{label}: advantages", max_valid_diff(ours[0], theirs[0], mask)))
        rows.append((f"{label}: returns", max_valid_diff(ours[1], theirs[1], mask)))

    for mode in AGGREGATION_MODES.names():
        for loss_mode in ["vanilla", "gspo", "cispo"]:
            rows += loss_parity(verl, batch, loss_mode, mode)
        ours, ours_metrics = value_loss(vpreds=batch["log_prob"], returns=batch["returns"],
                                        values=batch["old_log_prob"], response_mask=mask, cliprange_value=0.5,
                                        loss_agg_mode=mode)
        theirs, clipfrac = verl.compute_value_loss(batch["log_prob"], batch["returns"], batch["old_log_prob"],
                                                   mask, 0.5, loss_agg_mode=mode)
        rows.append((f"value loss [{mode}]", abs(ours.item() - theirs.item())))
        rows.append((f"value loss [{mode}]: vf_clipfrac", abs(ours_metrics["vf_clipfrac"].item() - clipfrac.item())))
        loss_mat = batch["values"]
        rows.append((f"aggregation [{mode}]", abs(aggregate_loss(loss_mat, mask, mode).item()
                                                  - verl.agg_loss(loss_mat, mask, mode).item())))
        tokens, sequences = int(mask.sum()) * 3, int((mask.sum(-1) > 0).sum()) * 3  # global counts
        ours_global = aggregate_loss(loss_mat, mask, mode, global_token_count=tokens, global_seq_count=sequences)
        theirs_global = verl.agg_loss(loss_mat, mask, mode, batch_num_tokens=tokens, global_batch_size=sequences)
        rows.append((f"aggregation [{mode}] global counts", abs(ours_global.item() - theirs_global.item())))

    for name in KL_NAMES:
        rows.append((f"kl_penalty {name}", max_valid_diff(kl_penalty(batch["log_prob"], batch["ref_log_prob"], name),
                                                          verl.kl_penalty(batch["log_prob"], batch["ref_log_prob"],
                                                                          name), mask)))
    rows += kl_in_reward_parity(verl, batch)
    from verl.utils.torch_functional import entropy_from_logits as verl_entropy_from_logits
    logits = torch.randn(8, 16, 50, generator=torch.Generator().manual_seed(1)) * 3
    rows.append(("entropy_from_logits", float((entropy_from_logits(logits)
                                               - verl_entropy_from_logits(logits)).abs().max())))
    return rows


def loss_parity(verl, batch: dict, loss_mode: str, mode: str) -> list[tuple[str, float]]:
    mask = batch["response_mask"]
    inputs = dict(old_log_prob=batch["old_log_prob"], advantages=batch["advantages"], response_mask=mask)
    ours_lp = batch["log_prob"].clone().requires_grad_(True)
    ours, ours_metrics = compute_policy_loss(loss_mode, log_prob=ours_lp, loss_agg_mode=mode, clip_ratio=0.2,
                                             clip_ratio_low=CLIP_LOW, clip_ratio_high=CLIP_HIGH,
                                             clip_ratio_c=CLIP_C, **inputs)
    ours.backward()
    theirs_lp = batch["log_prob"].clone().requires_grad_(True)
    theirs, theirs_metrics = verl.get_policy_loss_fn(loss_mode)(
        batch["old_log_prob"], theirs_lp, batch["advantages"], mask, mode, verl_actor_config(verl))
    theirs.backward()
    label = f"{loss_mode} [{mode}]"
    rows = [(label, abs(ours.item() - theirs.item())),
            (f"{label}: gradient", float((ours_lp.grad - theirs_lp.grad).abs().max()))]
    for key in ["pg_clipfrac", "pg_clipfrac_lower", "ppo_kl"]:
        rows.append((f"{label}: {key}", abs(ours_metrics[key].item() - theirs_metrics[f"actor/{key}"])))
    return rows


def kl_in_reward_parity(verl, batch: dict) -> list[tuple[str, float]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from verl import DataProto
            from verl.trainer.ppo.ray_trainer import apply_kl_penalty as verl_apply_kl_penalty
    except ImportError:  # ray_trainer needs more of verl's dependencies than core_algos
        return []
    mask, scores = batch["response_mask"], batch["token_level_rewards"]
    rows = []
    for name in ["kl", "low_var_kl"]:
        ours_ctrl = build_kl_controller("adaptive", kl_coef=0.05, target_kl=0.01, horizon=100)
        theirs_ctrl = verl.AdaptiveKLController(init_kl_coef=0.05, target_kl=0.01, horizon=100)
        ours, ours_metrics = apply_kl_penalty(token_level_scores=scores, old_log_prob=batch["old_log_prob"],
                                              ref_log_prob=batch["ref_log_prob"], response_mask=mask,
                                              kl_ctrl=ours_ctrl, kl_penalty_type=name)
        data = DataProto.from_dict(tensors=dict(response_mask=mask, token_level_scores=scores,
                                                old_log_probs=batch["old_log_prob"],
                                                ref_log_prob=batch["ref_log_prob"]))
        data, theirs_metrics = verl_apply_kl_penalty(data, theirs_ctrl, kl_penalty=name)
        rows.append((f"kl in reward {name}: rewards",
                     max_valid_diff(ours, data.batch["token_level_rewards"], mask)))
        rows.append((f"kl in reward {name}: reward_kl_penalty",
                     abs(ours_metrics["actor/reward_kl_penalty"].item() - theirs_metrics["actor/reward_kl_penalty"])))
        rows.append((f"kl in reward {name}: adaptive coefficient after update",
                     abs(ours_ctrl.value - theirs_ctrl.value)))
    return rows


def print_parity(verl) -> None:
    batches = {"right-padded": make_batch(64, 48, 4, seed=3, dense_rewards=True),
               "with holes": make_batch(64, 48, 4, holes=True, seed=4, dense_rewards=True),
               "0/1 outcomes, 4 alone": make_batch(64, 48, 4, seed=5, alone=4)}
    # A few tokens far off-policy (|log ratio| > 20), where log-ratio clamps show.
    for batch in batches.values():
        batch["log_prob"][::7, 2] = batch["old_log_prob"][::7, 2] - 25.0
    columns = [parity_rows(verl, batch) for batch in batches.values()]
    print("\nparity with verl: max |ours - verl| on valid tokens (float32; 64 x 48, groups of 4)")
    print(f"{'function':58s}" + "".join(f"{name:>23s}" for name in batches))
    for cells in zip(*columns):
        print(f"{cells[0][0]:58s}" + "".join(f"{value:23.2e}" if isinstance(value, float) else f"{value:>23s}"
                                            for _, value in cells))


# ---- plain references (used when verl is not importable) -------------------------------------

def reference_group_advantages(batch: dict, leave_one_out: bool) -> torch.Tensor:
    """GRPO / RLOO the straightforward way: collect each group's samples, loop over groups."""
    mask = batch["response_mask"]
    scores = (batch["token_level_rewards"] * mask).sum(-1)
    members: dict[int, list[int]] = {}
    for sample, group in enumerate(batch["group_index"].tolist()):
        members.setdefault(group, []).append(sample)
    per_sample = torch.empty_like(scores)
    for samples in members.values():
        rows = torch.tensor(samples)
        group = scores[rows]
        if leave_one_out:
            per_sample[rows] = group - (group.sum() - group) / (len(samples) - 1)
        else:
            per_sample[rows] = (group - group.mean()) / (group.std() + 1e-6)
    return per_sample.unsqueeze(-1) * mask


def reference_gae(batch: dict, gamma: float, lam: float) -> torch.Tensor:
    """The GAE recurrence one time step at a time over the batch, skipping masked tokens."""
    rewards, values, mask = batch["token_level_rewards"], batch["values"], batch["response_mask"]
    next_value = torch.zeros(rewards.shape[0])
    running = torch.zeros(rewards.shape[0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        valid = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(valid > 0, delta + gamma * lam * running, running)
        next_value = torch.where(valid > 0, values[:, t], next_value)
        advantages[:, t] = running
    advantages = advantages * mask
    mean = advantages.sum() / mask.sum()
    variance = (((advantages - mean) * mask) ** 2).sum() / (mask.sum() - 1)
    return (advantages - mean) * torch.rsqrt(variance + 1e-8) * mask


def reference_ppo_loss(old_log_prob, log_prob, advantages, response_mask) -> torch.Tensor:
    """Dual-clip PPO written term by term, left to autograd."""
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, -20, 20))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
    clipped_loss = torch.maximum(unclipped, clipped)
    losses = torch.where(advantages < 0, torch.minimum(clipped_loss, -advantages * CLIP_C), clipped_loss)
    return (losses * response_mask).sum() / response_mask.sum()


# ---- speed -----------------------------------------------------------------------------------

def speed_cases(verl, batch: dict) -> list[tuple[str, list[tuple[str, object]]]]:
    """(function, [(variant, callable)]): ours first, then verl's variants or a plain reference."""
    gae_settings = dict(gamma=1.0, lam=0.95)

    def ours_ppo(backward: bool):
        def run():
            log_prob = batch["log_prob"].detach().requires_grad_(backward)
            loss, _ = compute_policy_loss("vanilla", old_log_prob=batch["old_log_prob"], log_prob=log_prob,
                                          advantages=batch["advantages"], response_mask=batch["response_mask"],
                                          clip_ratio_low=CLIP_LOW, clip_ratio_high=CLIP_HIGH, clip_ratio_c=CLIP_C)
            if backward:
                loss.backward()
        return run

    def theirs_ppo(backward: bool):
        if verl is None:
            def run():
                log_prob = batch["log_prob"].detach().requires_grad_(backward)
                loss = reference_ppo_loss(batch["old_log_prob"], log_prob, batch["advantages"],
                                          batch["response_mask"])
                if backward:
                    loss.backward()
            return "reference (autograd)", run
        config = verl_actor_config(verl)

        def run():
            log_prob = batch["log_prob"].detach().requires_grad_(backward)
            loss, _ = verl.compute_policy_loss_vanilla(batch["old_log_prob"], log_prob, batch["advantages"],
                                                       batch["response_mask"], "token-mean", config)
            if backward:
                loss.backward()
        return "verl compute_policy_loss_vanilla", run

    ours = lambda name, **kw: (lambda: compute_advantage(name, **batch, **kw))  # noqa: E731
    if verl is None:
        others = {"grpo": [("reference (loop over groups)", lambda: reference_group_advantages(batch, False))],
                  "rloo": [("reference (loop over groups)", lambda: reference_group_advantages(batch, True))],
                  "gae": [("reference (loop over time)", lambda: reference_gae(batch, **gae_settings))]}
    else:
        algo = VerlAlgo(verl)
        others = {"grpo": [("verl grpo_vectorized", lambda: algo.advantage("grpo_vectorized", batch)),
                           ("verl grpo", lambda: algo.advantage("grpo", batch))],
                  "rloo": [("verl rloo_vectorized", lambda: algo.advantage("rloo_vectorized", batch)),
                           ("verl rloo", lambda: algo.advantage("rloo", batch))],
                  "gae": [("verl gae", lambda: algo.advantage("gae", batch, **gae_settings))]}
    return [("grpo", [("ours", ours("grpo")), *others["grpo"]]),
            ("rloo", [("ours", ours("rloo")), *others["rloo"]]),
            ("gae", [("ours", ours("gae", **gae_settings)), *others["gae"]]),
            ("ppo loss forward", [("ours", ours_ppo(False)), theirs_ppo(False)]),
            ("ppo loss forward+backward", [("ours", ours_ppo(True)), theirs_ppo(True)])]


def time_interleaved(variants: list[tuple[str, object]], repeats: int) -> dict[str, list[float]]:
    """Each round runs every variant once; the order rotates, so none always follows the same one."""
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for round_index in range(repeats):
        shift = round_index % len(variants)
        for name, function in variants[shift:] + variants[:shift]:
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def print_speed(verl, args) -> None:
    batch = make_batch(args.sequences, args.tokens, args.group_size)
    print(f"\nspeed: {args.sequences} sequences x {args.tokens} tokens, groups of {args.group_size}, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved repeats; "
          f"load average before {os.getloadavg()[0]:.1f}")
    print(f"{'function':27s} {'variant':34s} {'min s':>8s} {'median s':>9s} {'ours/this (median)':>19s} "
          f"{'(min)':>6s}")
    selected = [name for name in args.only.split(",") if name]
    for function, variants in speed_cases(verl, batch):
        if selected and not any(function.startswith(name) for name in selected):
            continue
        with torch.no_grad() if "ppo" not in function else torch.enable_grad():
            times = time_interleaved(variants, args.repeats)
        ours = times["ours"]
        for name, measured in times.items():
            ratio = "" if name == "ours" else \
                f"{statistics.median(ours) / statistics.median(measured):19.2f} {min(ours) / min(measured):6.2f}"
            print(f"{function:27s} {name:34s} {min(measured):8.4f} {statistics.median(measured):9.4f} {ratio}",
                  flush=True)
    print(f"load average after {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--group-size", type=int, default=8, help="rollout.n")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--verl-site", default=os.environ.get("VERL_SITE"),
                        help="site-packages holding verl (default $VERL_SITE); without it: plain references")
    parser.add_argument("--parity-only", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated speed functions (grpo,rloo,gae,ppo)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    verl = import_verl(args.verl_site)
    if verl is None and args.parity_only:
        raise SystemExit("--parity-only compares with verl: give --verl-site (or set VERL_SITE)")
    print(f"verl: {verl.__file__ if verl else 'not given (--verl-site): comparing with plain references'}")
    if verl is not None and not args.speed_only:
        print_parity(verl)
    if not args.parity_only:
        print_speed(verl, args)


if __name__ == "__main__":
    main()
