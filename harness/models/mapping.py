"""Declarative HF <-> Megatron parameter mapping: one table per architecture, pure transforms.

A table (``harness/models/mappings/``) lists, for each Megatron parameter, its HF source tensor(s)
and a transform kind. Megatron names are the ones megatron writes into checkpoints (the Transformer
Engine names: ``self_attention.linear_qkv.layer_norm_weight`` is the input norm fused into the QKV
linear); ``*`` stands for the global layer index. The same table serves HF -> Megatron conversion,
Megatron -> HF conversion and the weight sync (HF-named tensors from Megatron shards).

Every transform is pure and works on full tensors (the TP=1 layout, which is also the layout a
torch_dist checkpoint holds), plus a TP shard/unshard pair; gathering shards over ranks is not here.
Transforms also run on ``meta`` tensors, which is how shapes are planned without reading data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

if TYPE_CHECKING:
    from harness.models.hf_config import ModelSpec

LAYER = "*"
# The local layer spec keeps its norms as modules of their own; megatron's checkpoints (and the TE
# spec's parameters) name them after the linear they fuse into. These are the local spec's
# ``sharded_state_dict_keys_map`` (a test checks), applied to live parameter names too.
LOCAL_SPEC_RENAMES = {
    "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
    "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
}


def checkpoint_name(name: str) -> str:
    """A model parameter name (either layer spec, global layer index) as megatron checkpoints
    name it, e.g. ``decoder.layers.3.input_layernorm.weight`` ->
    ``decoder.layers.3.self_attention.linear_qkv.layer_norm_weight``."""
    for local, fused in LOCAL_SPEC_RENAMES.items():
        name = name.replace(f".{local}", f".{fused}")
    return name


class Transform:
    """Full HF tensors <-> one full Megatron tensor, and how tensor parallelism splits the latter."""

    partition_dim: int | None = None  # None: every TP rank holds the full tensor

    def to_megatron(self, hf: Sequence[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        (tensor,) = hf
        return tensor

    def to_hf(self, full: torch.Tensor, spec: ModelSpec) -> list[torch.Tensor]:
        return [full]

    def shard(self, full: torch.Tensor, tp_size: int, tp_rank: int, spec: ModelSpec) -> torch.Tensor:
        if self.partition_dim is None:
            return full
        return full.chunk(tp_size, dim=self.partition_dim)[tp_rank]

    def unshard(self, shards: Sequence[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        if self.partition_dim is None:
            return shards[0]
        return torch.cat(list(shards), dim=self.partition_dim)

    def __repr__(self) -> str:
        return type(self).__name__


class Replicated(Transform):
    """Same tensor on every TP rank: norms, including those fused into the next linear (TE names)."""


class ColumnParallel(Transform):
    """Output features split over TP (dim 0)."""

    partition_dim = 0


class RowParallel(Transform):
    """Input features split over TP (dim 1)."""

    partition_dim = 1


class VocabParallel(ColumnParallel):
    """Embedding / output layer: rows padded to megatron's padded vocabulary, then split (dim 0).

    The padding is the TP-independent size of ``spec.padded_vocab_size(1)``, so a checkpoint's layout
    does not depend on the TP it was written at; padded rows are zeros and are dropped towards HF.
    """

    def to_megatron(self, hf, spec):
        (tensor,) = hf
        padding = spec.padded_vocab_size(1) - tensor.shape[0]
        if padding < 0:
            raise ValueError(f"{tensor.shape[0]} vocabulary rows exceed the padded size "
                             f"{spec.padded_vocab_size(1)}")
        return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))])

    def to_hf(self, full, spec):
        return [full[: spec.vocab_size]]

    def to_megatron_rows(self, hf_rows: torch.Tensor, start: int, stop: int, spec) -> torch.Tensor:
        """Rows ``[start, stop)`` of the Megatron tensor from HF rows ``[start, min(stop, vocab))``:
        lets a vocabulary larger than a layer stream in blocks."""
        if hf_rows.shape[0] != max(0, min(stop, spec.vocab_size) - start):
            raise ValueError(f"rows [{start}, {stop}) need {min(stop, spec.vocab_size) - start} "
                             f"vocabulary rows, got {hf_rows.shape[0]}")
        padding = stop - start - hf_rows.shape[0]
        return torch.cat([hf_rows, hf_rows.new_zeros((padding, *hf_rows.shape[1:]))])


class FusedQKV(ColumnParallel):
    """q, k, v -> ``linear_qkv``: per query group, q_per_group query heads, one key head, one value
    head (``kv_channels`` rows each). TP splits whole groups, so a plain dim-0 chunk is right."""

    def _group_sizes(self, spec):
        q_per_group = spec.num_attention_heads // spec.num_query_groups
        return [q_per_group * spec.kv_channels, spec.kv_channels, spec.kv_channels]

    def to_megatron(self, hf, spec):
        groups = spec.num_query_groups
        per_group = [t.reshape(groups, -1, *t.shape[1:]) for t in hf]
        return torch.cat(per_group, dim=1).reshape(-1, *hf[0].shape[1:])

    def to_hf(self, full, spec):
        grouped = full.reshape(spec.num_query_groups, -1, *full.shape[1:])
        parts = grouped.split(self._group_sizes(spec), dim=1)
        return [p.reshape(-1, *full.shape[1:]) for p in parts]


class GatedMLP(ColumnParallel):
    """gate, up -> ``linear_fc1`` = [gate; up]; a TP shard is [gate_r; up_r], not a chunk of it."""

    def to_megatron(self, hf, spec):
        gate, up = hf
        return torch.cat([gate, up])

    def to_hf(self, full, spec):
        return list(full.chunk(2))

    def shard(self, full, tp_size, tp_rank, spec):
        gate, up = full.chunk(2)
        return torch.cat([gate.chunk(tp_size)[tp_rank], up.chunk(tp_size)[tp_rank]])

    def unshard(self, shards, spec):
        halves = [shard.chunk(2) for shard in shards]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves])


REPLICATED = Replicated()
ROW = RowParallel()
VOCAB = VocabParallel()
QKV = FusedQKV()
GATED_MLP = GatedMLP()


@dataclass(frozen=True)
class ParamMapping:
    """One row of a table: a Megatron parameter, its HF source tensor(s), and the transform."""

    megatron: str
    hf: tuple[str, ...]
    transform: Transform

    @property
    def per_layer(self) -> bool:
        return LAYER in self.megatron

    @property
    def checkpoint_key(self) -> str:
        """The torch_dist key: megatron stacks the layers into one tensor (layer = leading axis)."""
        return self.megatron.replace(f".{LAYER}", "")


def param(megatron: str, hf: str | Sequence[str], transform: Transform) -> ParamMapping:
    """A table row; ``hf`` is one name or the ordered source names of a fused transform."""
    return ParamMapping(megatron, (hf,) if isinstance(hf, str) else tuple(hf), transform)


@dataclass(frozen=True)
class Param:
    """A concrete parameter of one model: a table row at one global layer (None: not per layer)."""

    mapping: ParamMapping
    layer: int | None

    @property
    def megatron_name(self) -> str:
        return _at_layer(self.mapping.megatron, self.layer)

    @property
    def hf_names(self) -> tuple[str, ...]:
        return tuple(_at_layer(name, self.layer) for name in self.mapping.hf)

    @property
    def transform(self) -> Transform:
        return self.mapping.transform


def _at_layer(pattern: str, layer: int | None) -> str:
    return pattern if layer is None else pattern.replace(LAYER, str(layer))


class ModelMapping:
    """The table of ``spec``'s architecture, bound to its size (layers, heads, vocabulary, tying).

    The weight sync gets HF tensors from a Megatron model with::

        p = mapping.find(name)                   # parameter name with its global layer index
        full = p.transform.unshard(tp_shards, spec)   # the shards gathered over the TP group
        hf = mapping.to_hf(p, full)              # {hf_name: tensor}
    """

    def __init__(self, spec: ModelSpec, table: Sequence[ParamMapping]):
        self.spec = spec
        # With tied embeddings HF has no lm_head and megatron no output_layer: the embedding is both.
        self.table = tuple(m for m in table
                           if not (spec.tie_word_embeddings and m.megatron == "output_layer.weight"))
        self._by_pattern = {re.compile(re.escape(m.megatron).replace(r"\*", r"(\d+)") + "$"): m
                            for m in self.table}

    def params(self) -> Iterator[Param]:
        """Every Megatron parameter: non-layer ones first, then layer by layer."""
        yield from (Param(m, None) for m in self.table if not m.per_layer)
        for layer in range(self.spec.num_layers):
            yield from (Param(m, layer) for m in self.table if m.per_layer)

    def find(self, megatron_name: str) -> Param:
        """The parameter of a Megatron name with a global layer index (either layer spec)."""
        for pattern, mapping in self._by_pattern.items():
            match = pattern.match(checkpoint_name(megatron_name))
            if match:
                layer = int(match.group(1)) if mapping.per_layer else None
                if layer is not None and not 0 <= layer < self.spec.num_layers:
                    break
                return Param(mapping, layer)
        raise KeyError(f"{megatron_name!r} is not a parameter of the {self.spec.architecture} "
                       f"mapping ({self.spec.num_layers} layers)")

    def hf_names(self) -> list[str]:
        return [name for p in self.params() for name in p.hf_names]

    def to_megatron(self, p: Param, hf: Sequence[torch.Tensor]) -> torch.Tensor:
        return p.transform.to_megatron(hf, self.spec)

    def to_hf(self, p: Param, full: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(p.hf_names, p.transform.to_hf(full, self.spec)))


def model_mapping(spec: ModelSpec) -> ModelMapping:
    """The mapping of ``spec``'s architecture (``load_model_spec`` has refused unsupported ones)."""
    from harness.models.mappings import TABLES

    return ModelMapping(spec, TABLES[spec.architecture])
