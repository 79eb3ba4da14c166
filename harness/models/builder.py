"""Builds megatron-core GPTModel chunks for this rank from a `ModelSpec` and a parallel layout."""
import math
from typing import List

import torch
import torch.nn.functional as F

from harness.config.parallel import ParallelConfig
from harness.models.hf_config import ModelSpec
from harness.parallel import platform


def transformer_config(spec: ModelSpec, parallel: ParallelConfig, params_dtype: torch.dtype = torch.float32, **overrides):
    """The TransformerConfig for `spec` (Qwen2/Qwen3/Llama share the shape: RMSNorm, SwiGLU, RoPE, GQA)."""
    from megatron.core.transformer import TransformerConfig

    spec.validate_parallel(parallel)
    fields = dict(
        num_layers=spec.num_layers,
        hidden_size=spec.hidden_size,
        ffn_hidden_size=spec.ffn_hidden_size,
        num_attention_heads=spec.num_attention_heads,
        num_query_groups=spec.num_query_groups,
        kv_channels=spec.kv_channels,
        normalization="RMSNorm",
        layernorm_epsilon=spec.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=spec.add_qkv_bias,
        # Also tells finalize_model_grads to sum q/k norm grads over TP (each rank holds other heads).
        qk_layernorm=spec.qk_layernorm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_model_parallel_size,
        sequence_parallel=parallel.sequence_parallel,
        context_parallel_size=parallel.context_parallel_size,
        **parallel.recompute_options(),
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        **platform.transformer_config_options(),
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def layer_spec(spec: ModelSpec):
    from megatron.core.models.gpt import gpt_layer_specs

    if platform.layer_spec_kind() == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=spec.qk_layernorm)
    return gpt_layer_specs.get_gpt_layer_local_spec(qk_layernorm=spec.qk_layernorm, normalization="RMSNorm")


def build_model(spec: ModelSpec, parallel: ParallelConfig, *, params_dtype: torch.dtype = torch.float32, **config_overrides) -> List:
    """The GPTModel chunks this rank holds (one per virtual pipeline stage).

    Megatron's model-parallel state must already be initialised with the same `parallel` layout.
    `config_overrides` go to TransformerConfig (e.g. calculate_per_token_loss=True).
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    config = transformer_config(spec, parallel, params_dtype, **config_overrides)
    spec_for_layers = layer_spec(spec)
    vpp = parallel.virtual_pipeline_model_parallel_size
    chunks = []
    for vp_stage in range(vpp or 1):
        stage = None if vpp is None else vp_stage
        model = GPTModel(
            config=config,
            transformer_layer_spec=spec_for_layers,
            vocab_size=spec.padded_vocab_size(parallel.tensor_model_parallel_size),
            max_sequence_length=spec.max_position_embeddings,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            share_embeddings_and_output_weights=spec.tie_word_embeddings,
            position_embedding_type="rope",
            rotary_base=spec.rope_theta,
            vp_stage=stage,
        )
        if spec.rope_scaling is not None:
            # megatron-core's own llama3 scaling fixes low/high frequency factors and the original
            # context length; set the exact inverse frequencies the checkpoint was trained with.
            model.rotary_pos_emb.inv_freq = llama3_inverse_frequencies(spec).to(model.rotary_pos_emb.inv_freq)
        if torch.cuda.is_available():
            model.cuda(torch.cuda.current_device())
        chunks.append(model)
    return chunks


def llama3_inverse_frequencies(spec: ModelSpec) -> torch.Tensor:
    """Llama 3.1's frequency-dependent RoPE scaling (as published with the model)."""
    scaling = spec.rope_scaling
    dim = spec.kv_channels
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= context / high) & (wavelen <= context / low)
    return torch.where(medium, smoothed, scaled)
