"""The rollout engines inside Ray actors, one per rollout node, seen as one engine; and the weight
sinks the actor's ranks push into.

Each node's `RolloutWorker` holds that node's engine: the SGLang servers it launched on the node's
own GPUs (server i on GPUs i*TP .. (i+1)*TP-1, `base_gpu_id`), or the embedded model. Colocated, the
workers sit on the training nodes; split, on the rollout nodes. `RolloutFleet` is the engine
interface over all of them: a generate call is split over the workers in proportion to their
servers (the n samples of a prompt stay on one server, which shares their prefix), each worker
spreads its share over its servers, and the completions come back in the order of the prompts.

Weights go straight from the policy's ranks into sinks (`RolloutFleet.weight_route`):
- `tensor` (CUDA IPC / shared-memory handles) opens only on its own node, and the embedded engine is
  fed through Ray best from beside it: each node's engine is fed by a training rank on that node, which
  receives the tensors from the sending rank (harness/workers/weight_export.py);
- `distributed` (one NCCL / gloo group spanning every server, a `rank_offset` per server) and `disk`
  reach every node: the sending rank feeds all servers at once.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from harness.config.rollout import RolloutConfig
from harness.rollout.base import Completion, RolloutEngine, SamplingParams, Weights

NODE_LOCAL_TRANSPORTS = ("tensor",)  # their handles open only on the sending process's node


class RolloutWorker:
    def __init__(self, config: RolloutConfig):
        from harness.rollout.factory import make_engine

        self.config = config
        self.engine = make_engine(config)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int) -> List[Completion]:
        return self.engine.generate(prompts, sampling, n)

    def score(self, sequences: Sequence[Sequence[int]]) -> list:
        return self.engine.score(sequences)

    def update_weights(self, tensors: list, version) -> None:
        self.engine.update_weights(tensors, version)

    def restart_unhealthy(self) -> List[int]:
        """Restarts dead servers (their weights are then the initial ones: the trainer syncs next)."""
        restart = getattr(self.engine, "restart_unhealthy", None)
        return restart() if restart else []

    def server_urls(self) -> List[str]:
        return [client.url for client in getattr(self.engine, "clients", [])]

    def server_pids(self) -> List[int]:
        return [server.pid for server in getattr(self.engine, "servers", [])]

    def health(self) -> dict:
        return self.engine.health()

    def shutdown(self) -> None:
        self.engine.shutdown()


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one rollout worker runs: its Ray node, the address its servers listen on, its share of
    the servers, and the Ray actor options that put it there."""

    node_id: str
    host: str
    servers: int
    options: dict


class RolloutFleet(RolloutEngine):
    """The rollout workers of every rollout node behind the engine interface. Every wait is bounded."""

    def __init__(self, config: RolloutConfig, placements: Sequence[Placement], timeout_s: float):
        import ray

        self.config, self.placements, self.timeout_s = config, list(placements), timeout_s
        remote = ray.remote(RolloutWorker)
        self.workers = [remote.options(max_concurrency=4, **p.options).remote(
            dataclasses.replace(config, host=p.host, num_servers=p.servers)) for p in self.placements]
        try:
            self._get([w.health.remote() for w in self.workers], config.startup_timeout_s + 60)
            self.server_urls: List[List[str]] = self._get([w.server_urls.remote() for w in self.workers])
        except BaseException:
            self.shutdown()
            raise

    # ---- the engine interface ---------------------------------------------------------------
    def generate(self, prompts, sampling: SamplingParams, n: int = 1) -> List[Completion]:
        """Each worker samples its share of the prompts; prompt indices refer to `prompts` again."""
        shares = self._shares(len(prompts))
        parts = self._get([w.generate.remote(prompts[a:b], sampling, n) for w, (a, b) in shares],
                          self.config.request_timeout_s * 2)
        completions = []
        for ((_, (start, _)), part) in zip(shares, parts):
            for completion in part:
                completion.prompt_index += start
            completions += part
        return completions

    def score(self, sequences) -> list:
        shares = self._shares(len(sequences))
        parts = self._get([w.score.remote(sequences[a:b]) for w, (a, b) in shares], self.config.request_timeout_s * 2)
        return [scores for part in parts for scores in part]

    def update_weights(self, weights: Weights, version) -> None:
        """Through Ray into every worker (the trainer's ranks use `weight_route` instead)."""
        ActorSink(self.workers, self.config.update_timeout_s).update_weights(weights, version)

    def health(self) -> dict:
        nodes = self._get([w.health.remote() for w in self.workers], 60)
        versions = {node.get("weight_version") for node in nodes}
        return {"healthy": all(node["healthy"] for node in nodes),
                "weight_version": versions.pop() if len(versions) == 1 else None,
                "nodes": [{"host": p.host, **node} for p, node in zip(self.placements, nodes)]}

    def restart_unhealthy(self) -> List[str]:
        """Restarts the dead servers of every node, each node by its own worker; `host:index` of each."""
        restarted = self._get([w.restart_unhealthy.remote() for w in self.workers],
                              self.config.startup_timeout_s + 60)
        return [f"{p.host}:{index}" for p, indices in zip(self.placements, restarted) for index in indices]

    def shutdown(self) -> None:
        """Each worker stops its servers by pid; then the workers go."""
        import logging

        import ray

        try:
            self._get([w.shutdown.remote() for w in self.workers], 60)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as error:
            logging.getLogger(__name__).warning("rollout shutdown: %s", error)
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []

    # ---- weight sinks -----------------------------------------------------------------------
    def weight_route(self, rank_nodes: Sequence[str], sender_host: str, epoch: int = 0) -> Dict[int, object]:
        """{training rank: the sink it feeds}, the sending rank 0 first. `rank_nodes`: each rank's Ray
        node; `sender_host`: rank 0's address (the rendezvous of the `distributed` group); `epoch`:
        counts server restarts (a sink of a newer epoch rebuilds its connections)."""
        config = self.config
        if config.name == "sglang" and config.weight_transport not in NODE_LOCAL_TRANSPORTS:
            urls = [url for node_urls in self.server_urls for url in node_urls]
            return {0: SGLangSink(dataclasses.replace(config, server_urls=urls, host=sender_host), epoch)}
        fed: Dict[int, List[int]] = {}
        for index, placement in enumerate(self.placements):
            ranks = [rank for rank, node in enumerate(rank_nodes) if node == placement.node_id]
            if ranks:
                feeder = ranks[0]
            elif config.name == "embedded":
                feeder = 0  # Ray carries the tensors across nodes
            else:
                raise ValueError(
                    f"actor_rollout_ref.rollout.weight_transport={config.weight_transport!r} opens its handles only on "
                    f"the sending rank's node, and the servers on {placement.host} share a node with no training rank "
                    "(trainer.placement=split): use weight_transport=distributed")
            fed.setdefault(feeder, []).append(index)
        return {rank: self._sink(indices, epoch) for rank, indices in sorted(fed.items())}

    def _sink(self, indices: List[int], epoch: int):
        if self.config.name == "embedded":
            return ActorSink([self.workers[i] for i in indices], self.config.update_timeout_s,
                             [self.placements[i].host for i in indices])
        urls = [url for i in indices for url in self.server_urls[i]]
        return SGLangSink(dataclasses.replace(self.config, server_urls=urls), epoch)

    # ---- helpers ----------------------------------------------------------------------------
    def _shares(self, count: int) -> List[Tuple[object, Tuple[int, int]]]:
        """(worker, (start, end)) of the workers with a non-empty share, in proportion to their servers."""
        weights = [p.servers for p in self.placements]
        bounds = [count * sum(weights[:i]) // sum(weights) for i in range(len(weights) + 1)]
        return [(w, (a, b)) for w, a, b in zip(self.workers, bounds, bounds[1:]) if b > a]

    def _get(self, refs, timeout_s: Optional[float] = None):
        import ray

        return ray.get(refs, timeout=timeout_s or self.timeout_s)


class SGLangSink:
    """A client-only SGLang engine of running servers, opened once per sending process (and again when
    a sink of a newer epoch arrives: a restarted server no longer belongs to the old weight group)."""

    _engines: dict = {}  # server URLs -> (epoch, engine), per process

    def __init__(self, config: RolloutConfig, epoch: int = 0):
        self.config, self.epoch = config, epoch

    def __str__(self) -> str:
        return f"SGLang servers {', '.join(self.config.server_urls)} ({self.config.weight_transport})"

    def update_weights(self, stream, version) -> None:
        from harness.rollout.sglang_engine import SGLangEngine

        key = tuple(self.config.server_urls)
        epoch, engine = self._engines.get(key, (None, None))
        if epoch != self.epoch:
            if engine is not None:
                engine.transport.reset()
            engine = SGLangEngine(self.config)
            self._engines[key] = (self.epoch, engine)
        engine.update_weights(stream, version)


class ActorSink:
    """Sends the whole stream to rollout workers through Ray (small models: the embedded engine)."""

    def __init__(self, handles: list, timeout_s: float, hosts: Sequence[str] = ()):
        self.handles, self.timeout_s, self.hosts = handles, timeout_s, list(hosts)

    def __str__(self) -> str:
        return f"the embedded engine(s) on {', '.join(self.hosts)} (through Ray)"

    def update_weights(self, stream, version) -> None:
        import ray

        tensors = ray.put([(name, tensor.detach().clone()) for name, tensor in stream])
        ray.get([handle.update_weights.remote(tensors, version) for handle in self.handles], timeout=self.timeout_s)
