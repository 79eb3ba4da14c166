"""Everything an RL step talks to, placed with Ray: actor (+ reference), critic, reward model, rollout.

Colocated (`trainer.placement=colocate`): actor, critic and reward model take shares of the same
bundles and the rollout engine runs beside them. Split: the rollout engine gets a pool of its own.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import List, Optional

import ray

from harness.config.rl import RLConfig
from harness.rollout.base import RolloutError, SamplingParams
from harness.rollout.ray_rollout import RolloutWorker
from harness.workers.policy_worker import PolicyWorker
from harness.workers.ray_group import ResourcePool, WorkerError, WorkerGroup, init_ray
from harness.workers.value_worker import ValueWorker

log = logging.getLogger(__name__)


def torch_dist_checkpoint(model_path: str, converted: Path) -> str:
    """A torch_dist checkpoint of `model_path`: itself, or its HF weights converted once into `converted`."""
    from harness.checkpoint.convert import hf_to_mcore
    from harness.checkpoint.torch_dist import MARKER

    if (Path(model_path) / MARKER).exists():
        return model_path
    if not (converted / MARKER).exists():
        hf_to_mcore(model_path, converted, force=True)
    return str(converted)


class RLCluster:
    def __init__(self, config: RLConfig, total_steps: int):
        import torch

        self.config = config
        self.restarts = 0  # rollout servers restarted so far
        trainer = config.trainer
        use_gpu = trainer.device == "cuda" or (trainer.device == "auto" and torch.cuda.is_available())
        run_dir = Path(trainer.default_local_dir)
        extra_cpus = 1 if trainer.placement == "split" else 0
        init_ray(config.ray_init.address, config.ray_init.num_cpus or (None if use_gpu else config.world_size + extra_cpus),
                 None, config.ray_init.object_store_memory_mb)
        self.pool = ResourcePool("train", trainer.nnodes, trainer.n_gpus_per_node, use_gpu)
        nodes = sorted(node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"])
        log.info("Ray cluster of %d node(s) (%s); training ranks on %s", len(nodes), ", ".join(nodes),
                 ", ".join(self.pool.node_addresses()))
        roles = 1 + int(config.critic.enable) + int(config.reward_model.enable)
        arr = config.actor_rollout_ref
        group = dict(share=1.0 / roles, timeout_s=trainer.worker_timeout_s)

        self.actor = WorkerGroup(PolicyWorker, self.pool, name="actor", **group)
        self.critic = WorkerGroup(ValueWorker, self.pool, name="critic", **group) if config.critic.enable else None
        self.reward_model = (WorkerGroup(ValueWorker, self.pool, name="reward_model", **group)
                             if config.reward_model.enable else None)
        self.rollout_pool = None
        self.rollout = self._start_rollout(use_gpu)
        actor_checkpoint = torch_dist_checkpoint(arr.model.path, run_dir / "base_model_mcore")
        self.actor.setup(arr.actor.megatron, trainer.seed, model_dir=arr.model.path, checkpoint=actor_checkpoint,
                         dtype=arr.model.dtype, optim=arr.actor.optim, total_steps=total_steps,
                         with_reference=config.uses_reference)
        if self.critic is not None:
            critic = config.critic
            checkpoint = (actor_checkpoint if critic.model.path == arr.model.path
                          else torch_dist_checkpoint(critic.model.path, run_dir / "critic_base_mcore"))
            self.critic.setup(critic.megatron, trainer.seed, model_dir=critic.model.path, checkpoint=checkpoint,
                              dtype=critic.model.dtype, optim=critic.optim, total_steps=total_steps, from_lm=True)
        if self.reward_model is not None:
            rm = config.reward_model
            self.reward_model.setup(rm.megatron, trainer.seed, model_dir=rm.model.path, checkpoint=rm.model.path,
                                    dtype=rm.model.dtype, trainable=False, from_lm=False)
        self.sink = ray.get(self.rollout.weight_sink.remote(self.rollout))

    def _start_rollout(self, use_gpu: bool):
        config, trainer = self.config, self.config.trainer
        rollout_config = dataclasses.replace(config.actor_rollout_ref.rollout)
        options = {"num_cpus": 0, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}}}
        if trainer.placement == "split":
            # One bundle with all the rollout GPUs: the rollout worker launches every server on its node.
            self.rollout_pool = ResourcePool("rollout", 1, 1, use_gpu, gpus_per_bundle=trainer.rollout_gpus_per_node)
            options.update(num_cpus=1, num_gpus=trainer.rollout_gpus_per_node if use_gpu else 0,
                           scheduling_strategy=self.rollout_pool.strategy(0))
        handle = ray.remote(RolloutWorker).options(max_concurrency=4, **options).remote(rollout_config)
        ray.get(handle.health.remote(), timeout=rollout_config.startup_timeout_s + 60)
        return handle

    # ---- rollout ----------------------------------------------------------------------------
    def generate(self, prompts: List[List[int]], sampling: SamplingParams, n: int, version) -> list:
        """Completions of every prompt. When a server dies mid-call it is restarted with the current
        weights and the whole call is repeated: no sample is kept twice or lost."""
        return self._recovering(lambda: ray.get(self.rollout.generate.remote(prompts, sampling, n),
                                                timeout=self._rollout_timeout), version, "generation")

    def sync_weights(self, version) -> None:
        """The actor's weights into the engine as `version` (repeated on restarted servers if one died)."""
        self._recovering(lambda: self.actor.call("sync_weights", self.sink, version), version, "weight sync")

    @property
    def _rollout_timeout(self) -> float:
        return self.config.actor_rollout_ref.rollout.request_timeout_s * 2

    def _recovering(self, action, version, what: str):
        limit = self.config.trainer.max_rollout_restarts
        for attempt in range(limit + 1):
            try:
                return action()
            except (RolloutError, WorkerError, ray.exceptions.RayTaskError) as error:
                restarted = ray.get(self.rollout.restart_unhealthy.remote(), timeout=self._rollout_timeout)
                if not restarted or attempt == limit:
                    raise
                self.restarts += len(restarted)
                log.warning("rollout server(s) %s died during %s (%s); restarted them, loading weights version %s "
                            "and repeating the %s", restarted, what, str(error).splitlines()[0], version, what)
                self.actor.call("sync_weights", self.sink, version)
        raise AssertionError("unreachable")

    def compute_seconds(self) -> dict:
        """Model compute per role in the last step (slowest rank): `timing_s/compute_<role>`."""
        return {f"timing_s/compute_{group.name}": max(group.call("take_compute_seconds"))
                for group in (self.actor, self.critic, self.reward_model) if group is not None}

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        self.actor.call("save", str(directory / "actor"))
        if self.critic is not None:
            self.critic.call("save", str(directory / "critic"))

    def load(self, directory: Path) -> None:
        self.actor.call("load", str(directory / "actor"))
        if self.critic is not None:
            self.critic.call("load", str(directory / "critic"))

    def shutdown(self) -> None:
        try:
            ray.get(self.rollout.shutdown.remote(), timeout=60)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as error:
            log.warning("rollout shutdown: %s", error)
        for group in (self.actor, self.critic, self.reward_model):
            if group is not None:
                group.shutdown()
        ray.kill(self.rollout, no_restart=True)
        for pool in (self.pool, self.rollout_pool):
            if pool is not None:
                pool.remove()
        ray.shutdown()

    @property
    def data_parallel_size(self) -> int:
        return self.config.actor_rollout_ref.actor.megatron.data_parallel_size(self.config.world_size)

    @property
    def critic_data_parallel_size(self) -> Optional[int]:
        return self.config.critic.megatron.data_parallel_size(self.config.world_size)
