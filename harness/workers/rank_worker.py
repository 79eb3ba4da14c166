"""One Megatron rank of an RL worker group (a Ray actor): process groups, a model, its slice of a batch.

The driver hands every rank the whole batch (a dict of CPU tensors, one row per sequence); each rank
takes its data-parallel slice, cuts it into micro-batches and runs the pipeline schedule. Results
come back from the ranks that hold them (last pipeline stage, tensor-parallel rank 0), tagged with
the data-parallel rank, and the driver puts them back in order.

Batch keys: `input_ids` [B, S] (prompt then response, right-padded), `prompt_lengths` [B],
`response_mask` [B, R], and per-token inputs of the losses ([B, R]).
"""
import dataclasses
import os
import socket
import time
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional

import torch

from harness.config.parallel import ParallelConfig

Batch = Dict[str, torch.Tensor]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def select(batch: Batch, index) -> Batch:
    return {key: value[index] for key, value in batch.items()}


def microbatches(batch: Batch, size: int) -> List[Batch]:
    """Consecutive micro-batches of `size` sequences with the schedule's keys added; all share the
    batch's padded length (pipeline stages exchange tensors of one shape)."""
    tokens = batch["input_ids"]
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    return [{"tokens": tokens[i:i + size], "position_ids": positions[i:i + size],
             **{k: v[i:i + size] for k, v in batch.items() if k != "input_ids"}}
            for i in range(0, tokens.shape[0], size)]


class RankWorker:
    """Base of the policy and value workers; subclasses build their engines in `build`."""

    parallel: ParallelConfig
    compute_seconds: float = 0.0  # in the pipeline schedule and optimizer since the last `take_compute_seconds`

    @contextmanager
    def computing(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.compute_seconds += time.perf_counter() - started

    def take_compute_seconds(self) -> float:
        """Model compute time since the last call: what is not Ray, data movement or bookkeeping."""
        seconds, self.compute_seconds = self.compute_seconds, 0.0
        return seconds

    def rendezvous_address(self):
        """(address, free port) of this process: rank 0's becomes the group's rendezvous point."""
        from harness.parallel import free_port

        address = os.environ.get("HARNESS_NODE_IP") or socket.gethostbyname(socket.gethostname())
        try:
            port = free_port(address)
        except OSError:
            address = "127.0.0.1"
            port = free_port(address)
        return address, port

    def setup(self, rank: int, world_size: int, address: str, port: int, parallel: ParallelConfig,
              seed: int, threads: int, **settings) -> None:
        from harness.parallel import init_distributed, initialize_model_parallel

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        init_distributed(rank, world_size, address, port, local_rank=0)
        self.parallel = parallel
        initialize_model_parallel(parallel, seed=seed)
        self.build(**settings)

    def build(self, **settings) -> None:
        raise NotImplementedError

    # ---- where this rank stands ------------------------------------------------------------
    @staticmethod
    def data_parallel() -> tuple:
        from megatron.core import parallel_state as ps

        return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()

    @staticmethod
    def holds_results() -> bool:
        from megatron.core import parallel_state as ps

        return ps.is_pipeline_last_stage(ignore_virtual=True) and ps.get_tensor_model_parallel_rank() == 0

    def my_slice(self, batch: Batch) -> Batch:
        rank, size = self.data_parallel()
        total = batch["input_ids"].shape[0]
        if total % size:
            raise ValueError(f"a batch of {total} sequences does not split over {size} data-parallel ranks")
        share = total // size
        return {key: value[rank * share:(rank + 1) * share] for key, value in batch.items()}

    def tagged(self, value) -> Optional[tuple]:
        """(data-parallel rank, value) from the ranks that hold results, None from the others."""
        return (self.data_parallel()[0], value) if self.holds_results() else None

    # ---- training and checkpoints of the trained model (`self.engine`, `self.scheduler`) ------
    def train_minibatches(self, batch: Batch, minibatches: List[torch.Tensor], counts: list, micro_batch_size: int,
                          loss_key: str, make_loss: Callable) -> Optional[tuple]:
        """One optimizer step per mini-batch (the driver orders them over PPO epochs), then one LR
        scheduler step. A mini-batch whose loss is not finite on some rank is skipped (no step) and
        reported, so one bad batch cannot poison the weights."""
        from harness.workers.rl_losses import sum_metrics

        self.engine.train(True)
        reports = []
        for index, count in zip(minibatches, counts):
            parts = microbatches(self.my_slice(select(batch, index)), micro_batch_size)
            with self.computing():
                outputs = self.engine.forward_backward(parts, make_loss(count))
            report = {"sums": sum_metrics(outputs), "grad_norm": float("nan"), "skipped": 1.0}
            if self.all_finite([o[loss_key] for o in outputs]):
                with self.computing():
                    report.update(grad_norm=self.engine.optimizer_step()["grad_norm"], skipped=0.0)
            reports.append(report)
        self.scheduler.step(increment=1)
        return self.tagged({"minibatches": reports, "lr": self.engine.optimizer.param_groups[0]["lr"]})

    def save(self, directory: str) -> None:
        from harness.checkpoint.torch_dist import save_checkpoint

        save_checkpoint(directory, self.engine.chunks, self.engine.optimizer,
                        extra={"scheduler": self.scheduler.state_dict()})

    def load(self, directory: str) -> None:
        from harness.checkpoint.torch_dist import load_checkpoint

        extra = load_checkpoint(directory, self.engine.chunks, self.engine.optimizer)
        self.scheduler.load_state_dict(extra["scheduler"])

    @staticmethod
    def all_finite(values: List[float]) -> bool:
        """True on every rank when no rank saw a non-finite value (the step is then safe to apply)."""
        from harness.parallel import device

        bad = torch.tensor([0.0 if all(map(_finite, values)) else 1.0], device=device())
        torch.distributed.all_reduce(bad)
        return bad.item() == 0.0


def _finite(value) -> bool:
    return bool(torch.isfinite(torch.as_tensor(value)).all())


def value_model_spec(spec):
    """A value model has its own scalar head: never tied to the embeddings."""
    return dataclasses.replace(spec, tie_word_embeddings=False)
