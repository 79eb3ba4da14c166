"""The rollout engine inside a Ray actor, and the weight sinks the actor's sending rank pushes into.

The engine (SGLang servers it launched, or the embedded model) lives in `RolloutWorker`, placed on
the training devices (colocated) or on its own (split). Weights go straight from the policy's
sending rank to the engine: for SGLang the rank opens its own client of the same servers
(`SGLangSink`, any transport: shared memory / CUDA IPC, broadcast, disk); the embedded engine takes
the tensors through Ray (`ActorSink`).
"""
from __future__ import annotations

import dataclasses
from typing import List, Sequence

from harness.config.rollout import RolloutConfig
from harness.rollout.base import Completion, SamplingParams


class RolloutWorker:
    def __init__(self, config: RolloutConfig):
        from harness.rollout.factory import make_engine

        self.config = config
        self.engine = make_engine(config)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int) -> List[Completion]:
        return self.engine.generate(prompts, sampling, n)

    def update_weights(self, tensors: list, version) -> None:
        self.engine.update_weights(tensors, version)

    def restart_unhealthy(self) -> List[int]:
        """Restarts dead servers (their weights are then the initial ones: the trainer syncs next)."""
        restart = getattr(self.engine, "restart_unhealthy", None)
        return restart() if restart else []

    def server_pids(self) -> List[int]:
        return [server.pid for server in getattr(self.engine, "servers", [])]

    def health(self) -> dict:
        return self.engine.health()

    def weight_sink(self, handle):
        """What the sending rank pushes weights into (`handle`: this actor's own Ray handle)."""
        if self.config.name == "sglang":
            urls = [client.url for client in self.engine.clients]
            return SGLangSink(dataclasses.replace(self.config, server_urls=urls, launch_router=False, router_url=None))
        return ActorSink(handle, self.config.update_timeout_s)

    def shutdown(self) -> None:
        self.engine.shutdown()


class SGLangSink:
    """A client-only SGLang engine of the running servers, opened once per sending process."""

    _engines: dict = {}

    def __init__(self, config: RolloutConfig):
        self.config = config

    def update_weights(self, stream, version) -> None:
        from harness.rollout.sglang_engine import SGLangEngine

        key = tuple(self.config.server_urls)
        if key not in self._engines:
            self._engines[key] = SGLangEngine(self.config)
        self._engines[key].update_weights(stream, version)


class ActorSink:
    """Sends the whole stream to the `RolloutWorker` through Ray (small models: the embedded engine)."""

    def __init__(self, handle, timeout_s: float):
        self.handle, self.timeout_s = handle, timeout_s

    def update_weights(self, stream, version) -> None:
        import ray

        tensors = [(name, tensor.detach().clone()) for name, tensor in stream]
        ray.get(self.handle.update_weights.remote(tensors, version), timeout=self.timeout_s)
