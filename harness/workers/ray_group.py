"""Ray placement: resource pools (placement groups) and worker groups (one Ray actor per Megatron rank).

    pool = ResourcePool("train", nnodes=1, ranks_per_node=2, use_gpu=False)
    actors = WorkerGroup(PolicyWorker, pool, share=0.5, name="actor")       # colocated roles share
    critics = WorkerGroup(ValueWorker, pool, share=0.5, name="critic")      # the pool's bundles
    actors.setup(parallel, seed, model_dir=..., ...)
    results = actors.call("compute_log_probs", batch, 8)                    # every rank, bounded wait

Each bundle is one device (a GPU, or a CPU core's worth on CPU machines); a role takes `share` of
every bundle, so roles placed on one pool run on the same devices and take turns (colocated mode);
a pool of its own gives a role its own devices (split mode). Every call waits at most `timeout_s`; a
dead or stuck rank is reported by role and rank, and every actor is stopped by its handle.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


NODE_ID_LABEL = "ray.io/node-id"  # every Ray node carries it (Ray >= 2.49)


class WorkerError(RuntimeError):
    """A worker rank failed, died or did not answer in time (the message names role, rank, method)."""


class ResourcePool:
    """nnodes x ranks_per_node bundles; rank r lives on node r // ranks_per_node. One node: PACK.
    Several: each node's block of bundles is pinned to one Ray node (the driver's first), so the layout
    is the one asked for even where a node could hold more (PACK alone would fill one node first)."""

    def __init__(self, name: str, nnodes: int, ranks_per_node: int, use_gpu: bool, timeout_s: float = 120.0,
                 gpus_per_bundle: int = 1):
        self.name, self.use_gpu = name, use_gpu
        self.size = nnodes * ranks_per_node
        bundle = {"CPU": 1, "GPU": gpus_per_bundle} if use_gpu else {"CPU": 1}
        selectors = None
        if nnodes > 1:
            nodes = _nodes_for(name, nnodes, ranks_per_node, bundle)
            selectors = [{NODE_ID_LABEL: node["NodeID"]} for node in nodes for _ in range(ranks_per_node)]
        self.group = placement_group([dict(bundle) for _ in range(self.size)], strategy="PACK", name=f"harness-{name}",
                                     bundle_label_selector=selectors)
        try:
            ray.get(self.group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.group)
            raise WorkerError(f"resource pool {name!r}: {self.size} bundles of {bundle} were not available within "
                              f"{timeout_s:.0f} s (cluster resources: {ray.cluster_resources()})") from None

    def node_addresses(self) -> List[str]:
        """The IP address of the node of every bundle (rank), in rank order."""
        ips = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        placed = placement_group_table(self.group)["bundles_to_node_id"]
        return [ips[placed[index]] for index in range(self.size)]

    def strategy(self, index: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=index)

    def remove(self) -> None:
        remove_placement_group(self.group)


class WorkerGroup:
    def __init__(self, worker_class, pool: ResourcePool, share: float, name: str, timeout_s: float = 1800.0,
                 env: Optional[dict] = None):
        self.name, self.timeout_s, self.pool, self.share = name, timeout_s, pool, share
        remote = ray.remote(worker_class)
        env_vars = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.workers = [
            remote.options(num_cpus=share, num_gpus=share if pool.use_gpu else 0, scheduling_strategy=pool.strategy(i),
                           runtime_env={"env_vars": env_vars}, name=None).remote()
            for i in range(pool.size)
        ]

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def setup(self, parallel, seed: int, **settings) -> None:
        """Joins the ranks into one process group (rank 0's address) and builds their models."""
        address, port = self._get([self.workers[0].rendezvous_address.remote()], "rendezvous_address")[0]
        threads = max(1, int(self.share))
        refs = [w.setup.remote(rank, self.world_size, address, port, parallel, seed, threads, **settings)
                for rank, w in enumerate(self.workers)]
        self._get(refs, "setup")

    def call(self, method: str, *args, **kwargs) -> List[Any]:
        """`method` on every rank with the same arguments (put once in the object store)."""
        args = [ray.put(a) if _large(a) else a for a in args]
        return self._get([getattr(w, method).remote(*args, **kwargs) for w in self.workers], method)

    def gather(self, method: str, *args, **kwargs) -> List[Any]:
        """Results of the ranks that hold them ((data-parallel rank, value) pairs), in data-parallel order."""
        tagged = [r for r in self.call(method, *args, **kwargs) if r is not None]
        return [value for _, value in sorted(tagged, key=lambda pair: pair[0])]

    def _get(self, refs, method: str) -> List[Any]:
        started = time.monotonic()
        pending = list(refs)
        while pending:
            remaining = self.timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                ranks = [refs.index(r) for r in pending]
                raise WorkerError(f"{self.name}: {method} did not finish within {self.timeout_s:.0f} s on ranks {ranks}")
            done, pending = ray.wait(pending, num_returns=1, timeout=remaining)
            for ref in done:
                try:
                    ray.get(ref)  # surfaces a failure as soon as one rank fails, not after the others
                except ray.exceptions.RayError as error:
                    raise WorkerError(f"{self.name} rank {refs.index(ref)}: {method} failed: {error}") from None
        return ray.get(refs)

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []


def _nodes_for(pool: str, nnodes: int, ranks_per_node: int, bundle: dict) -> List[dict]:
    """`nnodes` alive Ray nodes with room for `ranks_per_node` bundles: the driver's node first, then by address."""
    here = ray.get_runtime_context().get_node_id()
    fits = [node for node in ray.nodes() if node["Alive"]
            and all(node["Resources"].get(key, 0) >= amount * ranks_per_node for key, amount in bundle.items())]
    fits.sort(key=lambda node: (node["NodeID"] != here, node["NodeManagerAddress"]))
    if len(fits) < nnodes:
        seen = ", ".join(f"{n['NodeManagerAddress']} {n['Resources']}" for n in ray.nodes() if n["Alive"])
        raise WorkerError(f"resource pool {pool!r}: trainer.nnodes={nnodes} needs {nnodes} Ray nodes with "
                          f"{ranks_per_node} x {bundle} each; the cluster has {len(fits)} ({seen})")
    return fits[:nnodes]


def _large(value) -> bool:
    return isinstance(value, dict)


def init_ray(address: Optional[str], num_cpus: Optional[int], num_gpus: Optional[int],
             object_store_memory_mb: int) -> None:
    """Attach to `address` (else to RAY_ADDRESS when set), or start a private local cluster (never a
    running one by accident)."""
    import os

    if ray.is_initialized():
        return
    # A local ray.init otherwise creates an auth token that later clients fail on (notes/cluster.md).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS")  # set by launchers/slurm/ray_cluster.sh
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        return
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             object_store_memory=object_store_memory_mb * 1024 * 1024, logging_level="WARNING",
             configure_logging=True, log_to_driver=True)
