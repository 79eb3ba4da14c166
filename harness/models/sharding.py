"""Full Megatron tensors <-> this rank's tensor-parallel shards, and global parameter names.

How TP splits each parameter is the architecture mapping's knowledge (`harness/models/mapping.py`,
e.g. a gated `linear_fc1` shard is [gate_r; up_r], not a slice of [gate; up]); this module applies
it to live model chunks: this rank's layers (offset per pipeline stage) and the TP group.
"""
import re
from typing import Callable, Dict

import torch

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.")


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


def load_full_weights(chunks, full: Dict[str, torch.Tensor], mapping) -> None:
    """Copy this rank's slice of each full (global-named) tensor into the model chunks."""
    from megatron.core import parallel_state

    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    for chunk in chunks:
        names = global_names(chunk)
        with torch.no_grad():
            for name, param in unwrap(chunk).named_parameters():
                transform = mapping.find(names[name]).transform
                param.copy_(transform.shard(full[names[name]], tp_size, tp_rank, mapping.spec))


def gather_full(chunks, value_of: Callable[[torch.nn.Parameter], torch.Tensor], mapping) -> Dict[str, torch.Tensor]:
    """Global name -> full tensor of `value_of(param)` (e.g. the param, or its main_grad) for the
    parameters this pipeline stage holds, all-gathered over tensor parallel."""
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_model_parallel_group()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    gathered = {}
    for chunk in chunks:
        names = global_names(chunk)
        for name, param in unwrap(chunk).named_parameters():
            local = value_of(param).detach().clone()  # a view into a buffer that the next step reuses
            if getattr(param, "tensor_model_parallel", False) and tp_size > 1:
                shards = [torch.empty_like(local) for _ in range(tp_size)]
                torch.distributed.all_gather(shards, local, group=group)
            else:
                shards = [local]
            gathered[names[name]] = mapping.find(names[name]).transform.unshard(shards, mapping.spec)
    return gathered
