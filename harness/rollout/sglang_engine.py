"""The SGLang rollout engine: launched or existing servers, batched generation, weight sync.

    engine = SGLangEngine(RolloutConfig(model_path=hf_dir, weight_transport="tensor"))
    completions = engine.generate(prompt_ids, SamplingParams(max_new_tokens=256), n=8)
    engine.update_weights(weight_stream, version=step)   # trainer rank 0, after each step
    engine.shutdown()
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from harness.rollout.base import (Completion, NamedTensor, RolloutEngine, RolloutError, SamplingParams,
                                  WeightStream, Weights, check_against)
from harness.config.rollout import RolloutConfig
from harness.rollout.sglang_client import SGLangClient
from harness.rollout.sglang_server import RouterProcess, SGLangServer
from harness.rollout.transports import make_transport


def buckets(tensors: Iterable[NamedTensor], bucket_bytes: int, dtype: torch.dtype,
            check: Callable[[str, Sequence[int]], None]) -> Iterable[List[NamedTensor]]:
    """Groups a tensor stream into buckets of about ``bucket_bytes`` (a larger tensor is a bucket of
    its own), cast to the served dtype; each tensor is checked before its bucket leaves."""
    bucket, size = [], 0
    for name, tensor in tensors:
        check(name, tensor.shape)
        tensor = tensor.detach().to(dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def served_tensor_shapes(model_path: Optional[str]) -> Optional[Dict[str, tuple]]:
    """{name: shape} of the served checkpoint, from its safetensors headers (None if not readable)."""
    from harness.models.safetensors_io import SafetensorsReader

    if not model_path or not os.path.isdir(model_path):
        return None
    return {name: tuple(info.shape) for name, info in SafetensorsReader(model_path).infos().items()}


class SGLangEngine(RolloutEngine):
    def __init__(self, config: RolloutConfig):
        if not config.server_urls and not config.model_path:
            raise ValueError("actor_rollout_ref.rollout.model_path is required to launch SGLang servers "
                             "(or give server_urls of running ones)")
        self.config = config
        self.servers: List[SGLangServer] = []
        self.router: Optional[RouterProcess] = None
        self.weight_version: Optional[str] = None
        self._update_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="sglang-generate")
        try:
            if config.server_urls:
                self.clients = [SGLangClient(url, config.request_timeout_s, config.max_retries)
                                for url in config.server_urls]
            else:
                self._launch()
            info = self.clients[0].get("/model_info")
            config.model_path = config.model_path or info.get("model_path")
            self.weight_version = info.get("weight_version")
            self.tp_sizes = [int(c.get("/server_info").get("tp_size", 1)) for c in self.clients]
            self.generation_clients = self._generation_clients()
        except BaseException:
            self.shutdown()
            raise
        self.served_shapes = served_tensor_shapes(config.model_path)
        self.transport = make_transport(config.weight_transport, config)

    def _launch(self):
        self.servers = [SGLangServer(self.config, index) for index in range(self.config.num_servers or 1)]
        for server in self.servers:  # all start together; start-up is tens of seconds each
            server.start()
        for server in self.servers:
            server.wait_healthy()
        self.clients = [server.client for server in self.servers]
        if self.config.launch_router:
            self.router = RouterProcess(self.config, [s.url for s in self.servers])
            self.router.start()
            self.router.wait_healthy()

    def _generation_clients(self) -> List[SGLangClient]:
        url = self.router.url if self.router else self.config.router_url
        if url:
            return [SGLangClient(url, self.config.request_timeout_s, self.config.max_retries)]
        return self.clients

    # ---- generation -------------------------------------------------------------------------
    def generate(self, prompts, sampling: SamplingParams, n: int = 1) -> List[Completion]:
        requests = [(index, list(prompt)) for index, prompt in enumerate(prompts) for _ in range(n)]
        chunks = [requests[i:i + self.config.batch_size] for i in range(0, len(requests), self.config.batch_size)]
        payload = {"sampling_params": sampling.to_sglang(), "return_logprob": True, "logprob_start_len": -1}
        results = self._map(chunks, lambda chunk: {**payload, "input_ids": [p for _, p in chunk]})
        return [_completion(index, answer) for chunk, answers in zip(chunks, results)
                for (index, _), answer in zip(chunk, answers)]

    def score(self, sequences) -> List[List[float]]:
        chunks = [list(map(list, sequences[i:i + self.config.batch_size]))
                  for i in range(0, len(sequences), self.config.batch_size)]
        results = self._map(chunks, lambda chunk: {
            "input_ids": chunk, "return_logprob": True, "logprob_start_len": 0,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}})
        return [[lp for lp, _, *_ in answer["meta_info"]["input_token_logprobs"][1:]]
                for answers in results for answer in answers]

    def _map(self, chunks, make_payload) -> List[list]:
        """One /generate per chunk, spread over the servers, ``max_concurrency`` in flight."""
        clients = itertools.cycle(self.generation_clients)
        futures = [self._pool.submit(self._generate_on, next(clients), make_payload(chunk)) for chunk in chunks]
        return [future.result() for future in futures]

    def _generate_on(self, client: SGLangClient, payload: dict) -> list:
        try:
            answer = client.post("/generate", payload, retry=True)
        except RolloutError as error:
            raise RolloutError(f"generation failed: {error}\n{self._describe(client)}") from None
        return answer if isinstance(answer, list) else [answer]

    def _describe(self, client: SGLangClient) -> str:
        for server in self.servers:
            if server.client is client or not server.alive():
                return server.describe_failure()
        return ""

    # ---- weights ----------------------------------------------------------------------------
    def update_weights(self, weights: Weights, version, servers: Optional[Sequence[SGLangClient]] = None) -> None:
        """Pause, flush, then stream ``weights`` in buckets through the configured transport inside
        SGLang's weight-update session; one bucket is in flight while the next is produced."""
        version = str(version)
        servers = list(servers or self.clients)
        tp_sizes = [self.tp_sizes[self.clients.index(c)] for c in servers]
        check = self._checker(weights)
        dtype = getattr(torch, self.config.dtype)
        with self._update_lock:
            try:  # a server that fails to pause must not leave the others paused
                self._each(servers, "/pause_generation", {"mode": self.config.pause_mode})
                self._each(servers, "/flush_cache", {})
                try:
                    self._each(servers, "/begin_weight_update", {})
                    self.transport.open(servers, tp_sizes, version)
                    with ThreadPoolExecutor(1, thread_name_prefix="weight-send") as sender:
                        in_flight = None
                        for bucket in buckets(weights, self.config.bucket_bytes, dtype, check):
                            if in_flight is not None:
                                in_flight.result()
                            in_flight = sender.submit(self.transport.send, bucket, version)
                        if in_flight is not None:
                            in_flight.result()
                    self.transport.close(version)
                except BaseException:
                    self.transport.reset()
                    raise
                finally:
                    self._each(servers, "/end_weight_update", {}, quiet=True)
            finally:
                self._each(servers, "/continue_generation", {}, quiet=True)
            for client in servers:
                served = client.get("/model_info").get("weight_version")
                if served != version:
                    raise RolloutError(f"{client.url} serves weight_version {served!r} after updating to {version!r}")
            self.weight_version = version

    def _checker(self, weights: Weights) -> Callable[[str, Sequence[int]], None]:
        """Checks names/shapes against the served model: a stream's whole manifest before anything
        is loaded, and each tensor as it comes."""
        expected = self.served_shapes
        if expected is None:
            return lambda name, shape: None
        if isinstance(weights, WeightStream):
            for info in weights.manifest:
                check_against(expected, info.name, info.shape)
        return lambda name, shape: check_against(expected, name, shape)

    def _each(self, clients, path, payload, quiet=False):
        for client in clients:
            try:
                client.ok(path, payload, self.config.update_timeout_s)
            except RolloutError:
                if not quiet:
                    raise

    # ---- health, restart, shutdown -------------------------------------------------------------
    def health(self) -> dict:
        servers = []
        for index, client in enumerate(self.clients):
            launched = self.servers[index] if self.servers else None
            alive = launched.alive() if launched else True
            try:
                version = client.get("/model_info", timeout_s=10, retry=False).get("weight_version") if alive else None
                healthy = alive
            except RolloutError:
                version, healthy = None, False
            servers.append({"url": client.url, "pid": launched and launched.pid, "healthy": healthy,
                            "weight_version": version})
        return {"healthy": all(s["healthy"] for s in servers), "weight_version": self.weight_version,
                "servers": servers}

    def restart_unhealthy(self, weights: Optional[Weights] = None) -> List[int]:
        """Restarts launched servers that died or stopped answering; with ``weights`` (the current
        ones, e.g. a fresh export) they are loaded into the restarted servers as the current version."""
        restarted = [i for i, server in enumerate(self.servers) if not (server.alive() and server.healthy())]
        if not restarted:
            return []
        self.transport.reset()
        for i in restarted:
            self.servers[i].restart()
        if weights is not None and self.weight_version is not None:
            self.update_weights(weights, self.weight_version, servers=[self.clients[i] for i in restarted])
        return restarted

    def shutdown(self) -> None:
        for client in getattr(self, "clients", []):
            try:
                client.post("/abort_request", {"abort_all": True}, timeout_s=5)
            except (RolloutError, OSError):
                pass  # a dead server has nothing to abort
        if getattr(self, "transport", None) is not None:
            self.transport.reset()
        for process in ([self.router] if self.router else []) + self.servers:
            process.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _completion(index: int, answer: dict) -> Completion:
    meta = answer["meta_info"]
    finish = meta.get("finish_reason") or {}
    return Completion(prompt_index=index, token_ids=list(answer["output_ids"]),
                      logprobs=[lp for lp, *_ in meta.get("output_token_logprobs", [])],
                      finish_reason=finish.get("type", "abort") if isinstance(finish, dict) else str(finish),
                      weight_version=meta.get("weight_version"))
