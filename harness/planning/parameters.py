"""The parameters one Megatron rank holds, in megatron-core's own order, from a `ModelSpec` alone.

The order matters to the memory model: DDP lays parameters into one flat buffer (last parameter
first), pads them for the distributed optimizer, and the optimizer shards that buffer by position.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

from harness.models.hf_config import ModelSpec


@dataclass(frozen=True)
class Param:
    name: str
    numel: int
    shared_embedding: bool = False  # the embedding also used as the output layer of the last stage


def layer_parameters(spec: ModelSpec, tp: int, layer: int) -> List[Param]:
    h, d = spec.hidden_size, spec.kv_channels
    q, kv = spec.num_attention_heads // tp, spec.num_query_groups // tp
    qkv_rows = (q + 2 * kv) * d
    prefix = f"decoder.layers.{layer}."
    params = [
        Param(prefix + "input_layernorm.weight", h),
        Param(prefix + "self_attention.linear_proj.weight", h * q * d),
        Param(prefix + "self_attention.linear_qkv.weight", qkv_rows * h),
    ]
    if spec.add_qkv_bias:
        params.append(Param(prefix + "self_attention.linear_qkv.bias", qkv_rows))
    if spec.qk_layernorm:
        params += [Param(prefix + "self_attention.q_layernorm.weight", d),
                   Param(prefix + "self_attention.k_layernorm.weight", d)]
    ffn = spec.ffn_hidden_size // tp
    return params + [
        Param(prefix + "pre_mlp_layernorm.weight", h),
        Param(prefix + "mlp.linear_fc1.weight", 2 * ffn * h),
        Param(prefix + "mlp.linear_fc2.weight", h * ffn),
    ]


def stage_layers(spec: ModelSpec, pp: int, vpp: Optional[int], stage: int, chunk: int = 0) -> Tuple[int, int]:
    """(first layer, layer count) of pipeline `stage`, virtual chunk `chunk` (Megatron's even split)."""
    chunks = vpp or 1
    per_chunk = spec.num_layers // (pp * chunks)
    return (chunk * pp + stage) * per_chunk, per_chunk


def chunk_parameters(spec: ModelSpec, tp: int, pp: int, vpp: Optional[int], stage: int, chunk: int = 0,
                     value_head: bool = False) -> List[Param]:
    """The parameters of one model chunk (one virtual pipeline stage) on a rank of `stage`."""
    chunks = vpp or 1
    first_stage = stage == 0 and chunk == 0
    last_stage = stage == pp - 1 and chunk == chunks - 1
    vocab = spec.padded_vocab_size(tp) // tp
    params = []
    if first_stage:
        params.append(Param("embedding.word_embeddings.weight", vocab * spec.hidden_size,
                            shared_embedding=spec.tie_word_embeddings and pp > 1))
    _, count = stage_layers(spec, pp, vpp, stage, chunk)
    for layer in range(count):  # megatron names a chunk's layers from 0
        params += layer_parameters(spec, tp, layer)
    if last_stage:
        params.append(Param("decoder.final_layernorm.weight", spec.hidden_size))
        if value_head:
            params.append(Param("output_layer.weight", spec.hidden_size))  # one value per position
        elif not spec.tie_word_embeddings or pp > 1:
            # Tied embeddings at PP>1: the last stage keeps its own copy, kept equal by an all-reduce.
            params.append(Param("output_layer.weight", vocab * spec.hidden_size,
                                shared_embedding=spec.tie_word_embeddings))
    return params


def total_parameters(spec: ModelSpec) -> int:
    """Parameters of the whole model (unpadded vocabulary, embeddings counted once when tied)."""
    per_layer = sum(p.numel for p in layer_parameters(spec, 1, 0))
    embedding = spec.vocab_size * spec.hidden_size
    output = 0 if spec.tie_word_embeddings else embedding
    return spec.num_layers * per_layer + embedding + output + spec.hidden_size


def non_embedding_parameters(spec: ModelSpec) -> int:
    """What the 6·N·tokens training FLOPs count (embedding lookups cost no FLOPs; the output layer does
    and is added separately by the step-time model)."""
    return spec.num_layers * sum(p.numel for p in layer_parameters(spec, 1, 0))
