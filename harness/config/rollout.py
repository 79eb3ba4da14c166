"""Rollout configuration: verl's ``actor_rollout_ref.rollout.*`` keys plus a free-form ``sglang`` dict
passed through to ``sglang.launch_server`` (``{"chunked_prefill_size": 512}`` ->
``--chunked-prefill-size 512``; ``True`` -> a bare flag; ``False``/``None`` -> omitted)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

ENGINES = ("sglang", "embedded")
SECTION = "actor_rollout_ref.rollout"
TRANSPORTS = ("tensor", "distributed", "disk")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_sglang_python() -> str:
    return os.environ.get("HARNESS_SGLANG_PYTHON", os.path.join(REPO_ROOT, ".venv-sglang", "bin", "python"))


def check_sampling(section: str, temperature: float, top_p: float, top_k: int) -> None:
    from harness.config.checks import check_range

    check_range(f"{section}.temperature", temperature, 0)
    check_range(f"{section}.top_p", top_p, 0, 1, low_open=True)
    if top_k != -1 and top_k < 1:
        raise ValueError(f"{section}.top_k={top_k}: must be -1 (off) or at least 1")


@dataclass
class ValKwargsConfig:
    """verl's `rollout.val_kwargs`: how validation prompts are answered (greedy unless do_sample)."""

    do_sample: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1  # samples per validation prompt; the metrics average over them (mean@n)

    def __post_init__(self):
        check_sampling(f"{SECTION}.val_kwargs", self.temperature, self.top_p, self.top_k)
        if self.n < 1:
            raise ValueError(f"{SECTION}.val_kwargs.n={self.n}: must be >= 1")


@dataclass
class RolloutConfig:
    name: str = "sglang"  # engine: sglang | embedded
    model_path: Optional[str] = None  # HF directory the servers start from (RL runs: actor_rollout_ref.model.path)
    dtype: str = "bfloat16"
    tensor_model_parallel_size: int = 1  # SGLang's own TP (--tp-size)
    gpu_memory_utilization: Optional[float] = None  # --mem-fraction-static
    max_model_len: Optional[int] = None  # --context-length
    # Sampling defaults (a trainer may pass its own SamplingParams per call).
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    response_length: int = 512
    val_kwargs: ValKwargsConfig = field(default_factory=ValKwargsConfig)
    # Servers: launched here (num_servers) or existing ones (server_urls), optionally behind a router.
    num_servers: int = 1
    server_urls: List[str] = field(default_factory=list)
    router_url: Optional[str] = None  # an existing sglang-router; generation goes through it
    launch_router: bool = False  # start sglang-router in front of the launched servers
    router_policy: str = "cache_aware"
    python: str = field(default_factory=default_sglang_python)
    host: str = "127.0.0.1"
    device: str = "auto"  # auto | cuda | cpu (cpu adds the test stand-in for sgl_kernel)
    skip_tokenizer_init: bool = True  # RL sends and receives token ids only
    log_dir: Optional[str] = None  # server logs (default: a temporary directory, kept)
    startup_timeout_s: float = 300.0
    request_timeout_s: float = 600.0
    max_retries: int = 3  # per request, for transient failures (connection reset, 5xx)
    max_concurrency: int = 8  # /generate requests in flight
    batch_size: int = 32  # sequences per /generate request
    # Weight sync.
    weight_transport: str = "tensor"  # tensor | distributed | disk
    bucket_size_mb: int = 512
    update_timeout_s: float = 600.0
    pause_mode: str = "abort"  # what /pause_generation does to running requests
    disk_dir: Optional[str] = None  # where the disk transport writes (must be visible to the servers)
    sglang: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in ENGINES:
            hint = " (vLLM is not used here: SGLang serves the same models)" if self.name == "vllm" else ""
            raise ValueError(f"{SECTION}.name={self.name!r}: choose one of {ENGINES}{hint}")
        if self.weight_transport not in TRANSPORTS:
            raise ValueError(f"actor_rollout_ref.rollout.weight_transport={self.weight_transport!r}: "
                             f"choose one of {TRANSPORTS}")
        for key in ("num_servers", "tensor_model_parallel_size", "max_concurrency", "batch_size",
                    "bucket_size_mb", "n"):
            if getattr(self, key) < 1:
                raise ValueError(f"actor_rollout_ref.rollout.{key}={getattr(self, key)}: must be >= 1")
        check_sampling(SECTION, self.temperature, self.top_p, self.top_k)
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"{SECTION}.gpu_memory_utilization={self.gpu_memory_utilization}: must be within (0, 1]")

    @property
    def bucket_bytes(self) -> int:
        return self.bucket_size_mb * 1024 * 1024

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
