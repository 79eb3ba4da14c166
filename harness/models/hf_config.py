"""Reads a Hugging Face model config into a `ModelSpec`: the architecture facts the Megatron builder,
the HF<->Megatron mapping and the rollout engines share. Pure Python: no torch import here."""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from harness.config.parallel import ParallelConfig

# HF architecture class -> our architecture name. Options each one needs are read below.
SUPPORTED_ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}
_MODEL_TYPES = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama"}
SUPPORTED_ROPE_TYPES = ("default", "llama3")
# Megatron pads the vocabulary so every TP rank holds an equal slice; padding to a multiple of 128 for
# every TP size that divides 128 keeps a checkpoint's embedding shape independent of its TP layout.
VOCAB_PAD_MULTIPLE = 128


class UnsupportedModelError(ValueError):
    """An architecture or option the harness cannot build faithfully."""


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    hf_architecture: str
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    kv_channels: int
    vocab_size: int
    tie_word_embeddings: bool
    add_qkv_bias: bool
    qk_layernorm: bool
    norm_epsilon: float
    rope_theta: float
    rope_scaling: Optional[Mapping[str, Any]]
    max_position_embeddings: int
    hf_config: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def padded_vocab_size(self, tensor_model_parallel_size: int = 1) -> int:
        multiple = math.lcm(VOCAB_PAD_MULTIPLE, tensor_model_parallel_size)
        return -(-self.vocab_size // multiple) * multiple

    def validate_parallel(self, parallel: ParallelConfig) -> None:
        """Raises ValueError naming the value and the constraint; call before any process group exists."""
        tp, pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
        for what, count in (
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_query_groups),
            ("intermediate_size", self.ffn_hidden_size),
        ):
            if count % tp:
                raise ValueError(
                    f"tensor_model_parallel_size={tp} does not divide {what}={count} of "
                    f"{self.hf_architecture}: TP must divide the heads, KV heads and MLP width"
                )
        stages = pp * (parallel.virtual_pipeline_model_parallel_size or 1)
        if pp > self.num_layers:
            raise ValueError(
                f"pipeline_model_parallel_size={pp} is larger than num_hidden_layers={self.num_layers}"
            )
        if self.num_layers % stages:
            raise ValueError(
                f"num_hidden_layers={self.num_layers} is not divisible by pipeline stages "
                f"(pipeline_model_parallel_size={pp} x virtual_pipeline_model_parallel_size="
                f"{parallel.virtual_pipeline_model_parallel_size or 1} = {stages})"
            )
        if parallel.context_parallel_size > 1:
            raise UnsupportedModelError(
                "context_parallel_size > 1 is not supported yet (it needs Transformer Engine attention)"
            )


def load_model_spec(source) -> ModelSpec:
    """`source`: a directory with config.json, a path to a config.json, a transformers config, or a dict."""
    config, where = _read_config(source)
    hf_architecture = _architecture_of(config, where)
    arch = SUPPORTED_ARCHITECTURES[hf_architecture]

    def get(key, default=None, required=False):
        if config.get(key) is None:
            if required:
                raise ValueError(f"{where}: key '{key}' is missing (needed for {hf_architecture})")
            return default
        return config[key]

    hidden = get("hidden_size", required=True)
    heads = get("num_attention_heads", required=True)
    kv_heads = get("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ValueError(f"{where}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    head_dim = get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise ValueError(f"{where}: hidden_size={hidden} is not divisible by num_attention_heads={heads}")
        head_dim = hidden // heads
    _refuse(where, get("hidden_act", "silu") != "silu", f"hidden_act={get('hidden_act')!r} (supported: 'silu')")
    _refuse(where, bool(get("mlp_bias", False)), "mlp_bias=true (supported: false)")
    _refuse(where, bool(get("use_sliding_window", False)), "use_sliding_window=true (supported: false)")
    attention_bias = bool(get("attention_bias", False))
    # Llama's attention_bias also adds an output-projection bias, which the Megatron layout has no slot for
    # unless every linear gets one; Qwen2 always has q/k/v biases and no o_proj bias.
    _refuse(where, arch != "qwen2" and attention_bias, "attention_bias=true (supported only as Qwen2's q/k/v bias)")
    rope_theta, rope_scaling = _rope_of(config, where)
    return ModelSpec(
        architecture=arch,
        hf_architecture=hf_architecture,
        num_layers=get("num_hidden_layers", required=True),
        hidden_size=hidden,
        ffn_hidden_size=get("intermediate_size", required=True),
        num_attention_heads=heads,
        num_query_groups=kv_heads,
        kv_channels=head_dim,
        vocab_size=get("vocab_size", required=True),
        tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        add_qkv_bias=arch == "qwen2",
        qk_layernorm=arch == "qwen3",
        norm_epsilon=float(get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta),
        rope_scaling=rope_scaling,
        max_position_embeddings=get("max_position_embeddings", 4096),
        hf_config=config,
    )


def _read_config(source):
    if isinstance(source, Mapping):
        return dict(source), "config"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        try:
            with open(path) as f:
                return json.load(f), path
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such HF config file") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if hasattr(source, "to_dict"):
        return source.to_dict(), f"{type(source).__name__}"
    raise TypeError(f"cannot read an HF config from {type(source).__name__}; give a directory, a dict or a transformers config")


def _architecture_of(config, where) -> str:
    names = config.get("architectures") or []
    for name in names:
        if name in SUPPORTED_ARCHITECTURES:
            return name
    model_type = config.get("model_type")
    if not names and model_type in _MODEL_TYPES:
        return next(k for k, v in SUPPORTED_ARCHITECTURES.items() if v == _MODEL_TYPES[model_type])
    found = ", ".join(names) or f"model_type={model_type!r}"
    raise UnsupportedModelError(
        f"{where}: architecture {found} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def _rope_of(config, where):
    # transformers 4.x writes rope_theta / rope_scaling at the top level; 5.x writes rope_parameters.
    params = dict(config.get("rope_parameters") or {})
    scaling = config.get("rope_scaling") or {k: v for k, v in params.items() if k != "rope_theta"}
    theta = config.get("rope_theta") or params.get("rope_theta") or 10000.0
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"{where}: rope_type={rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    _refuse(where, float(config.get("partial_rotary_factor") or 1.0) != 1.0, "partial_rotary_factor != 1")
    if rope_type == "default":
        return theta, None
    required = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in required if k not in scaling]
    if missing:
        raise ValueError(f"{where}: llama3 rope scaling lacks {', '.join(missing)}")
    return theta, {"rope_type": "llama3", **{k: scaling[k] for k in required}}


def _refuse(where, condition, what):
    if condition:
        raise UnsupportedModelError(f"{where}: {what} is not supported")
