"""``update_weights_from_distributed``: the trainer (rank 0) broadcasts each tensor to the servers'
ranks over a process group of its own (NCCL on GPU, gloo on CPU).

Both sides block until every rank arrives, so the trainer starts its side while the HTTP requests
are in flight, and watches both: a server that answers an error (a 400) fails the sync at once
instead of leaving the trainer blocked in a broadcast; every wait is bounded by
``update_timeout_s``. The group is built once and reused by later syncs; a failure or a restarted
server tears it down and the next sync builds a new one.
"""
from __future__ import annotations

import datetime
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import List

import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d

from harness.rollout.base import RolloutError
from harness.rollout.sglang_server import free_port
from harness.rollout.transports.base import WeightTransport, dtype_name, register_transport

POLL_S = 0.05


def join_group_as_rank0(address: str, port: int, world_size: int, group_name: str, backend: str,
                        timeout_s: float):
    """Rank 0 of a group built the way SGLang's ``init_custom_process_group`` builds its side
    (``torch.distributed.init_process_group`` would hang this rendezvous; notes/sglang.md)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, world_size = next(c10d.rendezvous(f"tcp://{address}:{port}", 0, world_size, timeout=timeout))
    store.set_timeout(timeout)
    group, _ = c10d._new_process_group_helper(world_size, rank, [], c10d.Backend(backend),
                                              c10d.PrefixStore(group_name, store),
                                              group_name=group_name, timeout=timeout)
    c10d._world.pg_group_ranks[group] = {i: i for i in range(world_size)}  # else "not registered"
    return group


def wait_all(futures: List[Future], works: list, timeout_s: float, what: str) -> None:
    """Until every HTTP answer and collective is done; the first failed answer raises at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        for future in futures:
            if future.done():
                future.result()  # raises the server's error
        if all(f.done() for f in futures) and all(w.is_completed() for w in works):
            for work in works:
                work.wait()
            return
        if time.monotonic() > deadline:
            raise RolloutError(f"{what} did not finish within {timeout_s:.0f} s")
        time.sleep(POLL_S)


@register_transport("distributed")
class DistributedTransport(WeightTransport):
    group = None

    pool, pool_size = None, 0

    def open(self, servers, tp_sizes, version):
        super().open(servers, tp_sizes, version)
        if self.pool_size <= len(servers):
            # A thread per server's HTTP call and one for this side's join: all block until every rank arrives.
            if self.pool is not None:
                self.pool.shutdown(wait=False)
            self.pool_size = len(servers) + 4
            self.pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="weight-sync")
        if self.group is None:
            self._create_group()

    def _create_group(self):
        self.group_name = f"harness-weights-{uuid.uuid4().hex[:8]}"
        self.backend = "nccl" if self.config.resolved_device() == "cuda" else "gloo"
        address = self.config.host  # the sending process's address, which every server's node reaches
        port = free_port(address)
        world_size = 1 + sum(self.tp_sizes)
        offsets = [1 + sum(self.tp_sizes[:i]) for i in range(len(self.servers))]
        timeout_s = self.config.update_timeout_s
        answers = [self.pool.submit(server.ok, "/init_weights_update_group",
                                    {"master_address": address, "master_port": port, "rank_offset": offset,
                                     "world_size": world_size, "group_name": self.group_name,
                                     "backend": self.backend}, timeout_s)
                   for server, offset in zip(self.servers, offsets)]
        joined = self.pool.submit(join_group_as_rank0, address, port, world_size, self.group_name,
                                  self.backend, timeout_s)
        wait_all(answers + [joined], [], timeout_s, f"joining weight-update group {self.group_name}")
        self.group = joined.result()

    def send(self, bucket, version):
        names = [name for name, _ in bucket]
        answers = [self.pool.submit(server.ok, "/update_weights_from_distributed",
                                    {"names": names, "dtypes": [dtype_name(t.dtype) for _, t in bucket],
                                     "shapes": [list(t.shape) for _, t in bucket],
                                     "group_name": self.group_name, "flush_cache": False,
                                     "weight_version": version}, self.config.update_timeout_s)
                   for server in self.servers]
        try:
            # Let an immediate refusal (a 400) arrive before any byte is broadcast.
            time.sleep(POLL_S)
            for answer in answers:
                if answer.done():
                    answer.result()
            works = [dist.broadcast(tensor.contiguous(), group=self.group, group_src=0, async_op=True)
                     for _, tensor in bucket]
            wait_all(answers, works, self.config.update_timeout_s, f"broadcast of {names[0]}..{names[-1]}")
        except BaseException:
            self.reset()  # a half-finished broadcast leaves the group unusable
            raise

    def reset(self):
        if self.group is None:
            return
        group, self.group = self.group, None
        for server in self.servers:
            try:
                server.post("/destroy_weights_update_group", {"group_name": self.group_name}, timeout_s=10)
            except RolloutError:
                pass  # the server may be the one that failed
        try:
            dist.destroy_process_group(group)
        except (RuntimeError, ValueError):
            pass  # a broken group may refuse a clean shutdown; it is dropped either way
