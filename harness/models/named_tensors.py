"""HF-named tensors as they travel: from checkpoints (conversion) and from live Megatron shards
(weight sync) to files or rollout engines."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence, Tuple

import torch

NamedTensor = Tuple[str, torch.Tensor]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class WeightStream:
    """HF-named tensors produced lazily, with the full list of what will come (the manifest), so a
    consumer can refuse a mismatching stream before it loads anything."""

    manifest: Sequence[TensorInfo]
    tensors: Iterable[NamedTensor] = field(repr=False)

    def __iter__(self) -> Iterator[NamedTensor]:
        return iter(self.tensors)

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "WeightStream":
        manifest = [TensorInfo(n, t.dtype, tuple(t.shape)) for n, t in state_dict.items()]
        return cls(manifest, state_dict.items())
