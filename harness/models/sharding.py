"""Full Megatron tensors <-> this rank's tensor-parallel shards, and global parameter names.

Megatron keeps layout facts on each parameter (`tensor_model_parallel`, `partition_dim`); the one
layout they do not describe is the gated MLP: `linear_fc1` holds [gate; up], and each TP shard holds
[gate_r; up_r], not a plain slice of the full tensor.
"""
import re
from typing import Callable, Dict, List

import torch

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.")


def is_gated_fc1(name: str, config) -> bool:
    return config.gated_linear_unit and name.endswith("mlp.linear_fc1.weight")


def unwrap(chunk):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def global_names(chunk) -> Dict[str, str]:
    """Local parameter name -> name in the full model (layer numbers offset for this PP/VP stage).
    With tied embeddings the last stage's `output_layer.weight` is the word embedding's copy."""
    model = unwrap(chunk)
    offsets = {i: layer.layer_number - 1 - i for i, layer in enumerate(model.decoder.layers)}
    tied = model.share_embeddings_and_output_weights
    names = {}
    for name, _ in model.named_parameters():
        global_name = _LAYER.sub(lambda m: f"decoder.layers.{int(m.group(1)) + offsets[int(m.group(1))]}.", name)
        if tied and global_name == "output_layer.weight":
            global_name = "embedding.word_embeddings.weight"
        names[name] = global_name
    return names


def shard(full: torch.Tensor, param, name: str, config, tp_rank: int, tp_size: int) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False) or tp_size == 1:
        return full
    if is_gated_fc1(name, config):
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp_size, dim=0)[tp_rank], up.chunk(tp_size, dim=0)[tp_rank]], dim=0)
    return full.chunk(tp_size, dim=param.partition_dim)[tp_rank]


def unshard(shards: List[torch.Tensor], param, name: str, config) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False) or len(shards) == 1:
        return shards[0]
    if is_gated_fc1(name, config):
        gates, ups = zip(*(s.chunk(2, dim=0) for s in shards))
        return torch.cat([*gates, *ups], dim=0)
    return torch.cat(shards, dim=param.partition_dim)


def load_full_weights(chunks, full: Dict[str, torch.Tensor]) -> None:
    """Copy this rank's slice of each full (global-named) tensor into the model chunks."""
    from megatron.core import parallel_state

    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    for chunk in chunks:
        model = unwrap(chunk)
        names = global_names(chunk)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(shard(full[names[name]], param, name, model.config, tp_rank, tp_size))


def gather_full(chunks, value_of: Callable[[torch.nn.Parameter], torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Global name -> full tensor of `value_of(param)` (e.g. the param, or its main_grad) for the
    parameters this pipeline stage holds, all-gathered over tensor parallel."""
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_model_parallel_group()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    gathered = {}
    for chunk in chunks:
        model = unwrap(chunk)
        names = global_names(chunk)
        for name, param in model.named_parameters():
            local = value_of(param).detach().clone()  # a view into a buffer that the next step reuses
            if getattr(param, "tensor_model_parallel", False) and tp_size > 1:
                shards = [torch.empty_like(local) for _ in range(tp_size)]
                torch.distributed.all_gather(shards, local, group=group)
            else:
                shards = [local]
            gathered[names[name]] = unshard(shards, param, name, model.config)
    return gathered
