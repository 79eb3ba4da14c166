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
    # Activation recompute, as Megatron names it: null (none) | selective (attention core) | full
    # (whole layers; `recompute_method` uniform|block over `recompute_num_layers` layers per group).
    recompute_granularity: Optional[str] = None
    recompute_method: Optional[str] = None  # full only; default uniform
    recompute_num_layers: Optional[int] = None  # full only; default 1
    # Shards optimizer states (and the fp32 main copy) over data-parallel ranks.
    use_distributed_optimizer: bool = True

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
        self._check_recompute()

    def _check_recompute(self) -> None:
        granularity = self.recompute_granularity
        if granularity not in (None, "selective", "full"):
            raise ValueError(f"recompute_granularity={granularity!r}: must be null, selective or full")
        if granularity != "full":
            if self.recompute_method is not None or self.recompute_num_layers is not None:
                raise ValueError("recompute_method / recompute_num_layers apply only to recompute_granularity=full")
            return
        self.recompute_method = self.recompute_method or "uniform"
        self.recompute_num_layers = self.recompute_num_layers or 1
        if self.recompute_method not in ("uniform", "block"):
            raise ValueError(f"recompute_method={self.recompute_method!r}: must be uniform or block")
        if not isinstance(self.recompute_num_layers, int) or self.recompute_num_layers < 1:
            raise ValueError(f"recompute_num_layers={self.recompute_num_layers!r}: must be a positive integer")

    def recompute_options(self) -> dict:
        """TransformerConfig fields for the activation recompute of this layout."""
        return {"recompute_granularity": self.recompute_granularity, "recompute_method": self.recompute_method,
                "recompute_num_layers": self.recompute_num_layers}

    def same_layout(self, other: "ParallelConfig") -> bool:
        """Same sharding of the weights (recompute and optimizer settings aside)."""
        keys = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
                "sequence_parallel", "context_parallel_size")
        return all(getattr(self, key) == getattr(other, key) for key in keys)

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
