"""Megatron parallel layout of one model (actor, critic, reference or SFT model)."""
from dataclasses import dataclass
from typing import Optional


@dataclass
class ParallelConfig:
    """Sizes as Megatron names them; data parallel is what the world size leaves over."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    virtual_pipeline_model_parallel_size: Optional[int] = None
    sequence_parallel: bool = False
    context_parallel_size: int = 1

    def __post_init__(self):
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r}: must be a positive integer")
        vpp = self.virtual_pipeline_model_parallel_size
        if vpp is not None:
            if not isinstance(vpp, int) or vpp < 1:
                raise ValueError(f"virtual_pipeline_model_parallel_size={vpp!r}: must be a positive integer or null")
            if vpp > 1 and self.pipeline_model_parallel_size == 1:
                raise ValueError(
                    f"virtual_pipeline_model_parallel_size={vpp} needs "
                    "pipeline_model_parallel_size > 1 (virtual stages interleave pipeline stages)"
                )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ValueError("sequence_parallel=true needs tensor_model_parallel_size > 1")

    @property
    def model_parallel_size(self) -> int:
        return self.tensor_model_parallel_size * self.pipeline_model_parallel_size * self.context_parallel_size

    def data_parallel_size(self, world_size: int) -> int:
        if world_size % self.model_parallel_size:
            raise ValueError(
                f"world size {world_size} is not divisible by tensor x pipeline x context parallel "
                f"= {self.tensor_model_parallel_size} x {self.pipeline_model_parallel_size} x "
                f"{self.context_parallel_size} = {self.model_parallel_size}"
            )
        return world_size // self.model_parallel_size
