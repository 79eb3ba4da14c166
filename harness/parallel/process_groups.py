"""Process-group setup for ranks started by torchrun, srun or Ray, and Megatron's model-parallel state."""
import datetime
import os
import socket
import warnings
from typing import Optional

import torch
import torch.distributed as dist

from harness.config.parallel import ParallelConfig
from harness.parallel import cpu_compat

DEFAULT_TIMEOUT_S = 600


def device() -> torch.device:
    """The device this rank computes on: its GPU when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rank_environment():
    """(rank, world_size, local_rank) from torchrun's or Slurm's variables; a lone process otherwise."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def init_distributed(
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    master_addr: Optional[str] = None,
    master_port: Optional[int] = None,
    local_rank: Optional[int] = None,
    backend: Optional[str] = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Join (or create) the default process group. Idempotent.

    torchrun and srun ranks need no arguments (their environment says it all; srun needs MASTER_ADDR
    and MASTER_PORT exported by the launcher); Ray-started ranks pass rank, world size and the
    rendezvous address explicitly. A lone process gets a one-rank group on a free local port.
    """
    cpu_compat.install()
    # megatron-core still calls torch.distributed APIs that torch marks deprecated, once per call.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    if dist.is_initialized():
        return
    env_rank, env_world, env_local = _rank_environment()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    local_rank = env_local if local_rank is None else local_rank
    master_addr = master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
    if master_port is None:
        if "MASTER_PORT" in os.environ:
            master_port = int(os.environ["MASTER_PORT"])
        elif world_size == 1:
            master_port = free_port(master_addr)
        else:
            raise ValueError(
                f"rank {rank} of {world_size}: MASTER_PORT is not set and no master_port was given; "
                "the launcher must choose one rendezvous port for all ranks"
            )
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"),
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def initialize_model_parallel(parallel: ParallelConfig, seed: int = 1234, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Create Megatron's TP/PP/DP groups for `parallel` and seed the model-parallel RNG."""
    from megatron.core import parallel_state, tensor_parallel

    if not dist.is_initialized():
        init_distributed(timeout_s=timeout_s)
    parallel.data_parallel_size(dist.get_world_size())  # raises naming the sizes if they don't fit
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_model_parallel_size,
        context_parallel_size=parallel.context_parallel_size,
        distributed_timeout_minutes=max(1, int(timeout_s // 60)),
    )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_model_parallel() -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
