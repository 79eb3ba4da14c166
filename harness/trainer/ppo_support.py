"""The pieces of the RL loop that are not the loop: data, sampling, scoring, batches, metrics,
validation, checkpoints and resume."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List

import torch

from harness.algorithms import (apply_kl_penalty, batch_metrics, build_kl_controller, compute_advantage,
                                correct_mismatch, group_reward_metrics, kl_penalty)
from harness.algorithms.dapo import overlong_reward_penalty
from harness.algorithms.tensor_ops import masked_mean
from harness.config.rl import RLConfig
from harness.rollout.base import SamplingParams
from harness.trainer import preemption
from harness.trainer.checkpoints import write_atomically
from harness.trainer.preflight import check_algorithm_names
from harness.trainer.rl_batch import PromptOrder, Sample, minibatch_counts, minibatch_plan, to_tensors
from harness.trainer.run_state import STATE_FILE, latest_step, read_state
from harness.workers.rank_worker import DTYPES
from harness.workers.rl_losses import PolicyLossSettings

log = logging.getLogger(__name__)
WORKER_KEYS = ("input_ids", "prompt_lengths", "response_mask")


class NonFiniteLossError(RuntimeError):
    pass


def micro_batch_size(batch, fixed: int, dynamic: bool, budget: int) -> int:
    """Sequences per micro-batch on one rank: `fixed`, or with `dynamic` as many as fit `budget` tokens
    at the batch's padded length (every micro-batch of a batch has that length: pipeline stages
    exchange one shape, and the old log-probs see the shapes the update sees). The losses use the
    mini-batch's global token counts, so any split gives the same gradient."""
    if not dynamic:
        return fixed
    return max(1, budget // batch["input_ids"].shape[1])


class PhaseTimer:
    """Seconds per phase (verl's `timing_s/*`) and throughput of the step."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self, batch: Dict[str, torch.Tensor]) -> dict:
        response_tokens = float(batch["response_mask"].sum())
        all_tokens = float(batch["prompt_lengths"].sum()) + response_tokens
        metrics = {f"timing_s/{name}": value for name, value in self.seconds.items()}
        step = self.seconds.get("step", math.nan)
        metrics.update({"perf/total_num_tokens": all_tokens, "perf/throughput": all_tokens / step,
                        "perf/gen_tokens_per_s": response_tokens / self.seconds.get("gen", math.nan)})
        return metrics


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def combine_updates(results: List[dict], prefix: str) -> dict:
    """Per-rank update reports -> one metric dict: loss metrics summed over data-parallel ranks (they
    are partial sums of mini-batch means), then averaged over mini-batches."""
    per_minibatch = []
    for index in range(len(results[0]["minibatches"])):
        reports = [r["minibatches"][index] for r in results]
        summed: Dict[str, float] = {}
        for report in reports:
            for key, value in report["sums"].items():
                summed[key] = summed.get(key, 0.0) + value
        per_minibatch.append((summed, reports[0]["grad_norm"], reports[0]["skipped"]))
    keys = per_minibatch[0][0].keys()
    metrics = {key: _mean([m[0][key] for m in per_minibatch]) for key in keys}
    metrics[f"{prefix}/grad_norm"] = _mean([m[1] for m in per_minibatch])
    metrics[f"{prefix}/skipped_nonfinite"] = sum(m[2] for m in per_minibatch)
    metrics[f"{prefix}/lr"] = results[0]["lr"]
    return metrics


class RLRun:
    """Data, reward, workers and the run's state; the loop in `ppo.py` calls its phases."""

    def __init__(self, config: RLConfig):
        from transformers import AutoTokenizer

        from harness.data import load_rl_dataset
        from harness.reward import RewardManager
        from harness.trainer.rl_cluster import RLCluster

        check_algorithm_names(config)
        self.config = config
        data, trainer = config.data, config.trainer
        self.run_dir = Path(trainer.default_local_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(config.actor_rollout_ref.model.path)
        overlong = "filter" if data.filter_overlong_prompts else data.truncation
        # Bad data stops the run here, before any worker starts.
        self.train_set = load_rl_dataset(data.train_files, self.tokenizer, max_prompt_length=data.max_prompt_length,
                                         overlong=overlong)
        self.val_set = (load_rl_dataset(data.val_files, self.tokenizer, max_prompt_length=data.max_prompt_length,
                                        overlong=overlong) if data.val_files else None)
        if len(self.train_set) < data.train_batch_size:
            raise ValueError(f"data.train_batch_size={data.train_batch_size} is larger than the "
                             f"{len(self.train_set)} usable prompts of data.train_files")
        self.total_steps = trainer.total_training_steps or trainer.total_epochs * (len(self.train_set) // data.train_batch_size)
        self.run_dir.mkdir(parents=True, exist_ok=True)  # only once the input is known to be good
        self.order = PromptOrder(len(self.train_set), data.seed, data.shuffle)
        self.kl_ctrl = build_kl_controller(**dataclasses.asdict(config.algorithm.kl_ctrl))
        self.step, self.nonfinite_steps = 0, 0
        self.rewards = RewardManager(config.reward_model, config.custom_reward_function)
        self.cluster, self.tracker = None, None
        try:
            self.cluster = RLCluster(config, self.total_steps)
            resume_from = self._resume_source()
            if resume_from is not None:
                self._load(resume_from)
            # The engine serves exactly the actor's weights from the first step (and after a resume).
            self.cluster.sync_weights(self.step)
            self.tracker = self._tracker(resumed=resume_from is not None)
        except BaseException:
            self.close()
            raise
        log.info("prompts: %d usable (%d over max_prompt_length filtered); %d steps", len(self.train_set),
                 self.train_set.stats.get("filtered_overlong", 0), self.total_steps)

    # ---- rollout and reward ------------------------------------------------------------------
    def sampling(self, step: int, round_: int) -> SamplingParams:
        rollout = self.config.actor_rollout_ref.rollout
        return SamplingParams(max_new_tokens=self.config.data.max_response_length, temperature=rollout.temperature,
                              top_p=rollout.top_p, top_k=rollout.top_k, stop_token_ids=self._stop_tokens(),
                              seed=self.config.trainer.seed * 1_000_003 + step * 1009 + round_)

    def _stop_tokens(self) -> tuple:
        eos = self.tokenizer.eos_token_id
        return () if eos is None else (eos,)

    def rollout_and_score(self, step: int, timer: PhaseTimer):
        """train_batch_size prompts x n samples, scored. With DAPO's dynamic sampling, groups whose
        samples all scored alike are dropped and more prompts generated, for at most
        `max_num_gen_batches` rounds (then the batch is filled up with dropped groups, and counted)."""
        config = self.config
        n, wanted = config.actor_rollout_ref.rollout.n, config.data.train_batch_size
        dynamic = config.algorithm.filter_groups
        kept: List[List[Sample]] = []
        dropped: List[List[Sample]] = []
        metrics: Dict[str, float] = {}
        scored = 0
        for round_ in range(dynamic.max_num_gen_batches if dynamic.enable else 1):
            indices = self.order.take(wanted - len(kept) if dynamic.enable else wanted)
            prompts = [self.train_set[i] for i in indices]
            with timer("gen"):
                completions = self.cluster.generate([p.prompt_ids for p in prompts], self.sampling(step, round_), n,
                                                    version=step - 1)
            samples = [Sample(indices[c.prompt_index], 0, prompts[c.prompt_index].prompt_ids, c.token_ids,
                              c.logprobs, c.finish_reason) for c in completions]
            with timer("reward"):
                for key, value in self.score(samples).items():  # counts add up over the rounds
                    metrics[key] = metrics.get(key, 0) + value
                scored += len(samples)
                if config.algorithm.adv_estimator == "remax":
                    self._greedy_baselines(prompts, samples, n)
            groups = [samples[i:i + n] for i in range(0, len(samples), n)]
            if not dynamic.enable:
                kept = groups
                break
            for group in groups:
                informative = len({s.score for s in group}) > 1
                (kept if informative and len(kept) < wanted else dropped).append(group)
            if len(kept) == wanted:
                break
        if "reward/failed" in metrics:
            metrics["reward/failed_fraction"] = metrics["reward/failed"] / scored
        if dynamic.enable:
            metrics.update({"dynamic_sampling/rounds": round_ + 1, "dynamic_sampling/dropped_groups": len(dropped),
                            "dynamic_sampling/filled_uninformative": max(0, wanted - len(kept))})
            kept += dropped[:wanted - len(kept)]
        for group_id, group in enumerate(kept):
            for sample in group:
                sample.group = group_id
        return [s for group in kept for s in group], metrics

    def score(self, samples: List[Sample]) -> dict:
        """Scores every sample (failures count as failed and score 0); the overlong penalty after."""
        from harness.reward import RewardItem

        config = self.config
        if self.cluster.reward_model is not None:
            batch = {k: v for k, v in to_tensors(samples, self.tokenizer.pad_token_id).items() if k in WORKER_KEYS}
            scores = torch.cat(self.cluster.reward_model.gather(
                "compute_scores", batch, config.reward_model.micro_batch_size_per_gpu)).tolist()
            metrics = {}
        else:
            items = []
            for s in samples:
                prompt = self.train_set[s.prompt_index]
                items.append(RewardItem(prompt.data_source, self.tokenizer.decode(s.response_ids, skip_special_tokens=True),
                                        prompt.ground_truth, prompt.extra_info))
            result = self.rewards.score(items)
            scores, metrics = result.scores, result.metrics()
        buffer = config.reward_model.overlong_buffer
        if buffer.enable:
            lengths = torch.tensor([len(s.response_ids) for s in samples], dtype=torch.float32)
            penalty = overlong_reward_penalty(lengths, config.data.max_response_length, buffer.len, buffer.penalty_factor)
            scores = (torch.tensor(scores) + penalty).tolist()
        for sample, value in zip(samples, scores):
            sample.score = float(value)
        return metrics

    def _greedy_baselines(self, prompts, samples: List[Sample], n: int) -> None:
        """ReMax: each prompt's greedy answer, scored, is the baseline of its samples."""
        greedy = dataclasses.replace(self.sampling(self.step + 1, 0), temperature=0.0, seed=None)
        completions = self.cluster.generate([p.prompt_ids for p in prompts], greedy, 1, version=self.step)
        baselines = [Sample(samples[i * n].prompt_index, 0, p.prompt_ids, c.token_ids, c.logprobs, c.finish_reason)
                     for i, (p, c) in enumerate(zip(prompts, completions))]
        self.score(baselines)
        for i, sample in enumerate(samples):
            sample.baseline = baselines[i // n].score

    def to_batch(self, samples: List[Sample]) -> Dict[str, torch.Tensor]:
        batch = to_tensors(samples, self.tokenizer.pad_token_id)
        batch["group"] = torch.tensor([s.group for s in samples])
        batch["reward_baselines"] = torch.tensor([s.baseline for s in samples])
        return batch

    # ---- model passes ------------------------------------------------------------------------
    def log_probs(self, batch, reference: bool = False, with_entropy: bool = False) -> Dict[str, torch.Tensor]:
        worker_batch = {k: batch[k] for k in WORKER_KEYS}
        parts = self.cluster.actor.gather("compute_log_probs", worker_batch, self._micro(batch, reference),
                                          reference=reference, with_entropy=with_entropy)
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def _micro(self, batch, reference: bool) -> int:
        arr = self.config.actor_rollout_ref
        if reference:
            ref = arr.ref
            return micro_batch_size(batch, ref.log_prob_micro_batch_size_per_gpu, ref.log_prob_use_dynamic_bsz,
                                    ref.log_prob_max_token_len_per_gpu)
        # The old log-probs use the update's micro-batches: identical shapes make step 1's ratio exactly 1.
        return self._actor_micro(batch)

    def _actor_micro(self, batch) -> int:
        actor = self.config.actor_rollout_ref.actor
        return micro_batch_size(batch, actor.ppo_micro_batch_size_per_gpu, actor.use_dynamic_bsz,
                                actor.ppo_max_token_len_per_gpu)

    def _critic_micro(self, batch, forward: bool = False) -> int:
        critic = self.config.critic
        budget = critic.forward_max_token_len_per_gpu if forward else critic.ppo_max_token_len_per_gpu
        return micro_batch_size(batch, critic.ppo_micro_batch_size_per_gpu, critic.use_dynamic_bsz, budget)

    def values(self, batch) -> torch.Tensor:
        worker_batch = {k: batch[k] for k in WORKER_KEYS}
        return torch.cat(self.cluster.critic.gather("compute_values", worker_batch,
                                                    self._critic_micro(batch, forward=True)))

    # ---- the algorithm -----------------------------------------------------------------------
    def compute_advantages(self, batch) -> dict:
        algorithm = self.config.algorithm
        scores, mask = batch["token_level_scores"], batch["response_mask"]
        old = batch["old_log_probs"] = batch.pop("log_probs")
        metrics: Dict[str, float] = {}
        rewards = scores
        if algorithm.use_kl_in_reward:
            rewards, kl_metrics = apply_kl_penalty(token_level_scores=scores, old_log_prob=old,
                                                   ref_log_prob=batch["ref_log_probs"], response_mask=mask,
                                                   kl_ctrl=self.kl_ctrl, kl_penalty_type=algorithm.kl_penalty)
            metrics.update(kl_metrics)
        advantages, returns = compute_advantage(
            algorithm.adv_estimator, token_level_rewards=rewards, response_mask=mask, group_index=batch["group"],
            values=batch.get("values"), gamma=algorithm.gamma, lam=algorithm.lam,
            norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo, reward_baselines=batch["reward_baselines"])
        correction = correct_mismatch(old_log_prob=old, rollout_log_probs=batch["rollout_log_probs"], response_mask=mask,
                                      rollout_is=algorithm.rollout_is, rollout_is_threshold=algorithm.rollout_is_threshold,
                                      rollout_is_threshold_lower=algorithm.rollout_is_threshold_lower)
        batch.update(advantages=advantages, returns=returns, loss_mask=correction.response_mask.float())
        if correction.weights is not None:
            batch["rollout_is_weights"] = correction.weights
        metrics.update(batch_metrics(token_level_scores=scores, token_level_rewards=rewards, advantages=advantages,
                                     returns=returns, response_mask=mask, values=batch.get("values")))
        metrics.update(group_reward_metrics(scores.sum(-1), batch["group"]))
        metrics.update(correction.metrics)
        lengths = mask.sum(-1)
        metrics.update({"batch/samples": len(lengths), "batch/prompts": len(set(batch["group"].tolist())),
                        "rollout/restarts": self.cluster.restarts,
                        "data/filtered_overlong_prompts": self.train_set.stats.get("filtered_overlong", 0)})
        metrics["response_length/clip_ratio"] = (lengths >= self.config.data.max_response_length).float().mean()
        metrics["actor/entropy_rollout_batch"] = masked_mean(batch.pop("entropy"), mask)
        if "ref_log_probs" in batch:
            metrics["actor/ref_kl"] = masked_mean(kl_penalty(old, batch["ref_log_probs"], "low_var_kl"), mask)
        return {key: float(value) for key, value in metrics.items()}

    def update_critic(self, batch, step: int) -> dict:
        critic = self.config.critic
        n = self.config.actor_rollout_ref.rollout.n
        plan = minibatch_plan(len(batch["input_ids"]), critic.ppo_mini_batch_size * n, critic.ppo_epochs,
                              self.config.actor_rollout_ref.actor.shuffle, self.config.trainer.seed + step)
        micro = self._critic_micro(batch)
        counts = minibatch_counts(batch["response_mask"], plan, self.cluster.critic_data_parallel_size, micro)
        worker_batch = {k: batch[k] for k in (*WORKER_KEYS, "values", "returns")}
        results = self.cluster.critic.gather("update", worker_batch, plan, counts, micro,
                                             cliprange_value=critic.cliprange_value, loss_agg_mode=critic.loss_agg_mode)
        return combine_updates(results, "critic")

    def update_actor(self, batch, step: int) -> dict:
        actor = self.config.actor_rollout_ref.actor
        n = self.config.actor_rollout_ref.rollout.n
        plan = minibatch_plan(len(batch["input_ids"]), actor.ppo_mini_batch_size * n, actor.ppo_epochs, actor.shuffle,
                              self.config.trainer.seed + step)
        micro = self._actor_micro(batch)
        counts = minibatch_counts(batch["loss_mask"], plan, self.cluster.data_parallel_size, micro)
        keys = (*WORKER_KEYS, "loss_mask", "old_log_probs", "advantages", "rollout_is_weights", "ref_log_probs")
        worker_batch = {k: batch[k] for k in keys if k in batch}
        settings = PolicyLossSettings(
            loss_mode=actor.policy_loss.loss_mode, clip_ratio=actor.clip_ratio, clip_ratio_low=actor.clip_ratio_low,
            clip_ratio_high=actor.clip_ratio_high, clip_ratio_c=actor.clip_ratio_c, loss_agg_mode=actor.loss_agg_mode,
            loss_scale_factor=actor.loss_scale_factor, entropy_coeff=actor.entropy_coeff,
            use_kl_loss=actor.use_kl_loss, kl_loss_coef=actor.kl_loss_coef, kl_loss_type=actor.kl_loss_type)
        results = self.cluster.actor.gather("update", worker_batch, plan, counts, micro, settings)
        return combine_updates(results, "actor")

    def check_nonfinite(self, actor_metrics: dict) -> None:
        skipped = actor_metrics.get("actor/skipped_nonfinite", 0)
        if not skipped:
            self.nonfinite_steps = 0
            return
        self.nonfinite_steps += 1
        log.warning("step %d: %d mini-batch update(s) skipped: non-finite loss (%d step(s) in a row)",
                    self.step, skipped, self.nonfinite_steps)
        if self.nonfinite_steps >= self.config.trainer.max_nan_steps:
            raise NonFiniteLossError(
                f"non-finite actor loss in {self.nonfinite_steps} consecutive steps (up to step {self.step}; "
                f"trainer.max_nan_steps={self.config.trainer.max_nan_steps}): stopping. Check rewards, advantages "
                f"and the learning rate; the last checkpoint is in {self.run_dir / 'checkpoints'}")

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> dict:
        """`val_kwargs.n` answers to every validation prompt (greedy unless `val_kwargs.do_sample`),
        scored: reward, accuracy, per data source (mean over the n answers)."""
        from harness.reward import RewardItem

        prompts, val = self.val_set.prompts, self.config.actor_rollout_ref.rollout.val_kwargs
        sampling = dataclasses.replace(self.sampling(0, 0), temperature=val.temperature if val.do_sample else 0.0,
                                       top_p=val.top_p, top_k=val.top_k, seed=self.config.trainer.seed if val.do_sample else None)
        completions = self.cluster.generate([p.prompt_ids for p in prompts], sampling, val.n, version=self.step)
        answered = [prompts[c.prompt_index] for c in completions]
        items = [RewardItem(p.data_source, self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
                            p.ground_truth, p.extra_info) for p, c in zip(answered, completions)]
        scores = self.rewards.score(items).scores
        metrics = {"val/score/mean": sum(scores) / len(scores),
                   "val/accuracy": sum(s >= 1.0 for s in scores) / len(scores),
                   "val/response_length/mean": sum(len(c.token_ids) for c in completions) / len(completions)}
        for source in sorted({p.data_source for p in prompts}):
            mine = [s for p, s in zip(answered, scores) if p.data_source == source]
            metrics[f"val-core/{source}/reward/mean@{val.n}"] = sum(mine) / len(mine)
        return metrics

    # ---- checkpoints, resume, the end ---------------------------------------------------------
    def due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0 or self.step == self.total_steps

    def step_dir(self, step: int) -> Path:
        return self.run_dir / "checkpoints" / f"global_step_{step}"

    def save(self) -> Path:
        from harness.checkpoint.convert import copy_hf_side_files

        directory = self.step_dir(self.step)
        self.cluster.save(directory)
        # Each checkpoint carries its HF config and tokenizer: the actor exports and evaluates alone,
        # the critic serves as a reward model (reward_model.model.path).
        arr, critic = self.config.actor_rollout_ref, self.config.critic
        copy_hf_side_files(Path(arr.model.path), directory / "actor", dtype=DTYPES[arr.model.dtype])
        if self.cluster.critic is not None:
            copy_hf_side_files(Path(critic.model.path), directory / "critic", dtype=DTYPES[critic.model.dtype])
        state = {"step": self.step, "prompt_order": self.order.state_dict(), "kl_coef": self.kl_ctrl.value,
                 "nonfinite_steps": self.nonfinite_steps}
        write_atomically(directory / STATE_FILE, json.dumps(state))
        write_atomically(self.run_dir / "checkpoints" / "latest", str(self.step))  # last: the step is complete
        return directory

    def stop_if_preempted(self) -> None:
        """After a step, if SIGUSR1 came: save the step (unless just saved) and stop with `Preempted`."""
        if not preemption.requested() or self.step == self.total_steps:
            return
        self._save_unless_saved()
        raise preemption.Preempted(self.step, self.step_dir(self.step))

    def _save_unless_saved(self) -> None:
        latest = self.run_dir / "checkpoints" / "latest"
        if not latest.exists() or int(latest.read_text()) != self.step:
            self.save()

    def _resume_source(self):
        mode = self.config.trainer.resume_mode
        if mode == "auto":
            step = latest_step(self.run_dir / "checkpoints")
            return None if step is None else self.step_dir(step)
        if mode == "disable":
            return None
        if not (Path(mode) / STATE_FILE).exists():
            raise FileNotFoundError(f"trainer.resume_mode={mode}: not a checkpoint step directory ({STATE_FILE} missing)")
        return Path(mode)

    def _load(self, directory: Path) -> None:
        state = read_state(directory)
        self.cluster.load(directory)
        self.step, self.nonfinite_steps = state["step"], state["nonfinite_steps"]
        self.order.load_state_dict(state["prompt_order"])
        self.kl_ctrl.value = state["kl_coef"]
        log.info("resumed from %s (step %d)", directory, self.step)

    def _tracker(self, resumed: bool):
        from harness.tracking import Tracker

        trainer = self.config.trainer
        return Tracker(trainer.default_local_dir, loggers=trainer.logger, project=trainer.project_name,
                       experiment=trainer.experiment_name,
                       config=json.loads(json.dumps(dataclasses.asdict(self.config), default=str)),
                       # A fresh run drops every line an earlier attempt left, its step-0 validation too.
                       total_steps=self.total_steps, resumed_step=self.step if resumed else -1)

    def finish(self) -> dict:
        """The last step is always saved; the final actor is exported to HF."""
        from harness.checkpoint.convert import mcore_to_hf

        self._save_unless_saved()
        summary = {"steps": self.step, "checkpoint": str(self.step_dir(self.step))}
        if self.config.trainer.export_hf:
            target = self.run_dir / "hf_actor"
            mcore_to_hf(self.step_dir(self.step) / "actor", target, force=True)
            summary["hf_actor"] = str(target)
        return summary

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        self.rewards.close()
        if self.cluster is not None:
            self.cluster.shutdown()
