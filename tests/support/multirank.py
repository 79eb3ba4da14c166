"""Multi-rank checks on CPU: a gloo group of N worker processes started once, reused by many checks.

    group = RankGroup(world_size=2)
    per_rank_results = group.run("tests.parallel.rank_checks:some_check", timeout=120, arch="qwen2")
    group.close()

`run` calls a top-level function (given as "module:function") on every rank with the same keyword
arguments and returns the per-rank return values. Every wait is bounded; a rank that raises, dies or
does not answer in time fails the call with that rank's traceback, and the group is restarted on the
next call (a failed collective can leave the survivors stuck).
"""
import importlib
import multiprocessing
import os
import sys
import time
import traceback
from typing import Any, List

START_TIMEOUT_S = 120
# How long the other ranks get to finish once one rank has failed, before the group is torn down.
GRACE_AFTER_FAILURE_S = 5


class RankFailure(RuntimeError):
    pass


def _worker(rank: int, world_size: int, port: int, conn, sys_path: List[str], timeout_s: float):
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    try:
        import torch

        torch.set_num_threads(1)
        from harness.parallel import init_distributed

        init_distributed(rank=rank, world_size=world_size, master_addr="127.0.0.1", master_port=port, timeout_s=timeout_s)
        conn.send(("ready", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        target, kwargs = message
        try:
            module, _, name = target.partition(":")
            result = getattr(importlib.import_module(module), name)(**kwargs)
            conn.send(("ok", result))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class RankGroup:
    def __init__(self, world_size: int = 2, collective_timeout_s: float = 120):
        self.world_size = world_size
        self.collective_timeout_s = collective_timeout_s
        self._procs = []
        self._conns = []

    def _start(self):
        from harness.parallel import free_port

        ctx = multiprocessing.get_context("spawn")
        port = free_port()
        for rank in range(self.world_size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(rank, self.world_size, port, child, list(sys.path), self.collective_timeout_s),
                # Not daemonic: dist_checkpointing's writer starts processes of its own. A worker
                # whose parent dies gets EOF on its pipe and exits.
                daemon=False,
                name=f"rank{rank}",
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        self._collect("start-up", START_TIMEOUT_S)

    def run(self, target: str, timeout: float = 300, **kwargs) -> List[Any]:
        if not self._procs:
            self._start()
        for conn in self._conns:
            conn.send((target, kwargs))
        return self._collect(target, timeout)

    def _collect(self, what: str, timeout: float) -> List[Any]:
        deadline = time.monotonic() + timeout
        results, failures = {}, {}
        while len(results) + len(failures) < self.world_size:
            now = time.monotonic()
            if failures:
                deadline = min(deadline, now + GRACE_AFTER_FAILURE_S)
            if now > deadline:
                break
            for rank, (proc, conn) in enumerate(zip(self._procs, self._conns)):
                if rank in results or rank in failures:
                    continue
                if conn.poll(0.05):
                    try:
                        status, value = conn.recv()
                    except EOFError:
                        failures[rank] = f"rank {rank} closed its pipe (exit code {proc.exitcode})"
                        continue
                    (results if status in ("ok", "ready") else failures)[rank] = value
                elif not proc.is_alive():
                    failures[rank] = f"rank {rank} died with exit code {proc.exitcode}"
        if failures or len(results) < self.world_size:
            silent = [r for r in range(self.world_size) if r not in results and r not in failures]
            self.close()
            report = [f"{what}: {len(failures)} rank(s) failed, {len(silent)} did not answer in time"]
            report += [f"--- rank {r} ---\n{failures[r]}" for r in sorted(failures)]
            if silent:
                report.append(f"ranks {silent} did not answer within {timeout:.0f} s")
            raise RankFailure("\n".join(report))
        return [results[r] for r in range(self.world_size)]

    def close(self):
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()  # by its own pid
                proc.join(timeout=10)
        self._procs, self._conns = [], []
