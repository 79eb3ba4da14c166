"""What the platform offers megatron-core: fused kernels, Transformer Engine, where to initialise."""
import importlib.util
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def has_transformer_engine() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def layer_spec_kind() -> str:
    """'transformer_engine' on GPUs that have it, 'local' (megatron-core's own modules) otherwise."""
    return "transformer_engine" if has_transformer_engine() else "local"


def transformer_config_options() -> dict:
    """TransformerConfig fields that depend on the platform; CPU turns off every fused CUDA kernel."""
    if torch.cuda.is_available():
        fused = has_transformer_engine()
        return dict(
            use_cpu_initialization=False,
            bias_activation_fusion=fused,
            bias_dropout_fusion=fused,
            masked_softmax_fusion=fused,
            apply_rope_fusion=fused,
            gradient_accumulation_fusion=False,  # needs apex/TE fused wgrad kernels; opt in explicitly
            persist_layer_norm=False,
        )
    return dict(
        use_cpu_initialization=True,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        # gloo mismatches batched isend/irecv between one pair of ranks in the interleaved (virtual)
        # pipeline schedule: micro-batches 3-4 of 4 got another's activations (measured). Unbatched
        # ops are ordered by megatron-core itself.
        batch_p2p_comm=False,
    )


def visible_gpus() -> list:
    """(name, total memory in bytes) of each CUDA device this process sees; empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory)
            for i in range(torch.cuda.device_count())]


def has_apex_or_te_adam() -> bool:
    """megatron-core's fused Adam comes from Transformer Engine or apex; without them, torch's AdamW."""
    return torch.cuda.is_available() and any(
        importlib.util.find_spec(name) is not None for name in ("transformer_engine", "apex"))
