"""What the planner knows about the machines: GPU figures, and which kernels the run will use.

GPU figures are the vendors' published dense bf16 peak and HBM bandwidth. Memory is counted in GiB
(2^30 bytes) throughout and called GB, as `--gpu-mem 80` is meant; an "80 GB" H100 reports 79.6 GiB
to torch, which the fixed per-process margin covers.
"""
from dataclasses import dataclass, field, replace
from typing import Optional

GB = float(2 ** 30)


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gb: float
    bf16_tflops: float  # dense peak
    hbm_tb_s: float


# Published datasheet figures (SXM parts).
GPU_TYPES = {
    "H100": GpuType("H100 80GB", 80, 989.0, 3.35),
    "H200": GpuType("H200 141GB", 141, 989.0, 4.8),
    "A100": GpuType("A100 80GB", 80, 312.0, 2.04),
    "B200": GpuType("B200 180GB", 180, 2250.0, 8.0),
}


def gpu_type_for(name: Optional[str], memory_gb: float) -> GpuType:
    """The known GPU whose name appears in `name` (as torch reports it), else an H100-like part with
    the given memory (the step-time figures are then labelled with that assumption)."""
    for key, gpu in GPU_TYPES.items():
        if name and key in name.upper():
            return replace(gpu, memory_gb=memory_gb)
    return replace(GPU_TYPES["H100"], name=f"{name or 'GPU'} (assumed H100-class)", memory_gb=memory_gb)


@dataclass(frozen=True)
class Kernels:
    """The implementations whose memory differs: what the harness picks on each platform
    (harness/parallel/platform.py and megatron-core's fallbacks)."""

    attention: str  # flash: no [s, s] scores kept | unfused: megatron's local baddbmm + softmax
    norm: str  # fused: Transformer Engine RMSNorm inside the next linear | torch: torch.nn.RMSNorm
    adam: str  # fused: apex/TE multi-tensor | foreach: torch AdamW on CUDA | single_tensor: torch on CPU
    comm: str = "nccl"  # gloo's reduce-scatter (distributed optimizer) copies the whole gradient buffer


# Transformer Engine on CUDA (NGC containers): fused norms, flash/fused attention, fused Adam.
TE_KERNELS = Kernels(attention="flash", norm="fused", adam="fused")
# CUDA without Transformer Engine / apex: megatron's local layer spec and torch's foreach AdamW.
LOCAL_CUDA_KERNELS = Kernels(attention="unfused", norm="torch", adam="foreach")
# CPU (gloo): the local spec and torch's per-tensor AdamW, as measured in benchmarks/planner_accuracy.py.
CPU_KERNELS = Kernels(attention="unfused", norm="torch", adam="single_tensor", comm="gloo")


@dataclass(frozen=True)
class Cluster:
    """`num_gpus` devices of `gpu_mem_gb` each, `gpus_per_node` per node."""

    num_gpus: int
    gpu_mem_gb: float
    gpus_per_node: int = 8
    gpu: GpuType = field(default_factory=lambda: GPU_TYPES["H100"])
    kernels: Kernels = TE_KERNELS
    # Memory a GPU process holds outside its tensors: CUDA context (~0.5 GB) and NCCL communicator
    # buffers; and how much more than its live tensors the caching allocator reserves. Margins, not
    # measured here (benchmarks/planner_accuracy.py measures tensors; no GPU was at hand).
    process_overhead_gb: float = 1.0
    fragmentation: float = 0.10
    device: str = "cuda"  # cpu: gloo ranks; no step-time figures (the model is of GPUs)
    enforce_memory: bool = True  # False: report the memory, refuse nothing (a CPU run's plan)

    def __post_init__(self):
        if self.num_gpus < 1 or self.gpus_per_node < 1 or self.gpu_mem_gb <= 0:
            raise ValueError(f"a cluster needs positive sizes, got {self.num_gpus} GPUs of {self.gpu_mem_gb} GB, "
                             f"{self.gpus_per_node} per node")

    @property
    def nodes(self) -> int:
        return self.num_gpus // self.gpus_per_node

    def with_gpus(self, num_gpus: int) -> "Cluster":
        return replace(self, num_gpus=num_gpus)


def check_cluster_sizes(num_gpus, gpu_mem_gb, gpus_per_node) -> Optional[str]:
    """One line naming the bad figure, or None."""
    for name, value in (("--gpus", num_gpus), ("--gpus-per-node", gpus_per_node)):
        if not isinstance(value, int) or value < 1:
            return f"{name} {value}: must be a positive whole number"
    if not isinstance(gpu_mem_gb, (int, float)) or gpu_mem_gb <= 0:
        return f"--gpu-mem {gpu_mem_gb}: must be a positive number of GB"
    if num_gpus > gpus_per_node and num_gpus % gpus_per_node:
        return f"--gpus {num_gpus} is not a multiple of --gpus-per-node {gpus_per_node} (whole nodes only)"
    return None


def cpu_cluster(ranks: int) -> Cluster:
    """A CPU run: `ranks` gloo processes sharing the machine's RAM; nothing is refused."""
    return Cluster(num_gpus=ranks, gpu_mem_gb=1e6, gpus_per_node=ranks, kernels=CPU_KERNELS,
                   process_overhead_gb=0.0, fragmentation=0.0, device="cpu", enforce_memory=False)
