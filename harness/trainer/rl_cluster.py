"""Everything an RL step talks to, placed with Ray: actor (+ reference), critic, reward model, rollout.

Colocated (`trainer.placement=colocate`): actor, critic and reward model take shares of the same
bundles, and a rollout worker on every training node launches that node's servers on its GPUs.
Split: the rollout workers get nodes of their own (`trainer.rollout_nnodes`), one worker per node.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import ray

from harness.config.rl import RLConfig
from harness.rollout.base import RolloutError, SamplingParams
from harness.rollout.ray_rollout import Placement, RolloutFleet
from harness.workers.policy_worker import PolicyWorker
from harness.workers.ray_group import ResourcePool, WorkerError, WorkerGroup, init_ray, node_addresses
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
        extra_cpus = config.rollout_nodes().nodes if trainer.placement == "split" else 0
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
        self.sync_epoch = 0  # server restarts so far that changed the weight sinks
        self.route = self._weight_route()

    def _start_rollout(self, use_gpu: bool) -> RolloutFleet:
        """A rollout worker per rollout node, each launching its node's share of
        `actor_rollout_ref.rollout.num_servers` on that node's GPUs."""
        rollout = self.config.actor_rollout_ref.rollout
        slots = self._rollout_slots(use_gpu)
        # Across nodes the servers listen on their node's address (and the weight group meets at rank 0's).
        self._spans_nodes = len(set(self.pool.bundle_nodes()) | {node for node, _, _ in slots if node}) > 1
        self._addresses = node_addresses()
        env = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}}}
        placements = [Placement(node_id=node, host=self._address(node), servers=servers, options={**options, **env})
                      for node, servers, options in slots]
        fleet = RolloutFleet(rollout, placements, timeout_s=rollout.request_timeout_s * 2)
        log.info("rollout: %s", ", ".join(f"{p.host}: {len(urls)} server(s)" if urls else f"{p.host}: {rollout.name}"
                                          for p, urls in zip(placements, fleet.server_urls)))
        return fleet

    def _rollout_slots(self, use_gpu: bool) -> list:
        """(Ray node, servers, actor options) of each rollout worker. Colocated: in the first training
        bundle of each node, using no resources of its own; split: a bundle per rollout node with its GPUs."""
        config, trainer = self.config, self.config.trainer
        rollout, layout = config.actor_rollout_ref.rollout, config.rollout_nodes()
        if rollout.name == "sglang" and not rollout.launches_servers:  # servers that run elsewhere
            return [(None, len(rollout.server_urls) or 1, {"num_cpus": 0})]
        if trainer.placement == "split":
            self.rollout_pool = ResourcePool("rollout", layout.nodes, 1, use_gpu, gpus_per_bundle=layout.gpus_per_node,
                                             strategy="STRICT_SPREAD")
            return [(node, layout.servers_per_node, {"num_cpus": 1, "num_gpus": layout.gpus_per_node if use_gpu else 0,
                                                     "scheduling_strategy": self.rollout_pool.strategy(index)})
                    for index, node in enumerate(self.rollout_pool.bundle_nodes())]
        nodes = self.pool.bundle_nodes()  # trainer.n_gpus_per_node bundles pinned to each node
        return [(node, layout.servers_per_node,
                 {"num_cpus": 0, "scheduling_strategy": self.pool.strategy(nodes.index(node))})
                for node in dict.fromkeys(nodes)]

    def _address(self, node) -> str:
        return self._addresses[node] if self._spans_nodes and node else self.config.actor_rollout_ref.rollout.host

    def _weight_route(self) -> dict:
        """Which training rank feeds which rollout sink (see RolloutFleet.weight_route)."""
        ranks = self.pool.bundle_nodes()
        route = self.rollout.weight_route(ranks, self._address(ranks[0]), self.sync_epoch)
        log.info("weight sync: %s", "; ".join(f"rank {rank} ({self._address(ranks[rank])}) feeds {sink}"
                                              for rank, sink in route.items()))
        return route

    # ---- rollout ----------------------------------------------------------------------------
    def generate(self, prompts: List[List[int]], sampling: SamplingParams, n: int, version) -> list:
        """Completions of every prompt. When a server dies mid-call it is restarted with the current
        weights and the whole call is repeated: no sample is kept twice or lost."""
        return self._recovering(lambda: self.rollout.generate(prompts, sampling, n), version, "generation")

    def sync_weights(self, version) -> None:
        """The actor's weights into every node's engine as `version` (repeated on restarted servers if one died)."""
        self._recovering(lambda: self.actor.call("sync_weights", self.route, version), version, "weight sync")

    def _recovering(self, action, version, what: str):
        limit = self.config.trainer.max_rollout_restarts
        for attempt in range(limit + 1):
            try:
                return action()
            except (RolloutError, WorkerError, ray.exceptions.RayTaskError) as error:
                restarted = self.rollout.restart_unhealthy()  # each node's worker restarts its own servers
                if not restarted or attempt == limit:
                    raise
                self.restarts += len(restarted)
                log.warning("rollout server(s) %s died during %s (%s); restarted them, loading weights version %s "
                            "and repeating the %s", restarted, what, str(error).splitlines()[0], version, what)
                self.sync_epoch += 1  # the restarted servers left the old weight groups
                self.route = self._weight_route()
                self.actor.call("sync_weights", self.route, version)
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
        self.rollout.shutdown()  # every node's worker stops its servers by pid
        for group in (self.actor, self.critic, self.reward_model):
            if group is not None:
                group.shutdown()
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
