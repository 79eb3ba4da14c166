"""Tiny random Hugging Face causal LMs, built locally (no downloads), for conversion and parity tests.

    config, model = make_tiny_hf_model("qwen3", out_dir, tie=True)

Each architecture carries the feature its mapping must get right:
- ``qwen2``: q/k/v biases (``attention_bias``), GQA (8 heads, 2 key/value heads);
- ``qwen3``: q/k RMSNorms and ``head_dim`` (32) different from hidden/heads (64/8);
- ``llama``: Llama 3.1's own llama3 rope scaling (factor 8, low 1, high 4, original 8192).
The default vocabulary (250) is not a multiple of 128, so megatron pads it at every TP.
Every parameter, the norms included, is random: a mapping that swaps two tensors of equal shape, or
drops a norm, changes the logits.

With ``out_dir`` the model is saved there as safetensors (``max_shard_size`` splits it into several
files with an index), with a tiny word-level tokenizer beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

ARCHITECTURES = ("qwen2", "qwen3", "llama")

# Llama 3.1's published rope scaling; megatron-core applies exactly these values.
LLAMA31_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def tiny_hf_config(arch: str, *, tie: bool = False, vocab_size: int = 250, num_layers: int = 2,
                   hidden_size: int = 64, num_heads: int = 8, num_kv_heads: int = 2,
                   intermediate_size: int = 96):
    """The transformers config of a tiny model of ``arch`` (see the module docstring)."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        tie_word_embeddings=tie,
        rms_norm_eps=1e-6,
    )
    if arch == "qwen2":
        # transformers' Qwen2 always has q/k/v biases (no attention_bias switch).
        config = Qwen2Config(max_position_embeddings=512, rope_theta=1_000_000.0, **common)
    elif arch == "qwen3":
        config = Qwen3Config(max_position_embeddings=512, head_dim=32, rope_theta=1_000_000.0,
                             **common)
    elif arch == "llama":
        config = LlamaConfig(max_position_embeddings=16384,
                             rope_parameters={**LLAMA31_ROPE, "rope_theta": 500_000.0}, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {ARCHITECTURES}")
    config.architectures = [type(config).__name__.replace("Config", "ForCausalLM")]
    return config


def make_tiny_hf_model(arch: str, out_dir: str | Path | None = None, *, tie: bool = False,
                       vocab_size: int = 250, num_layers: int = 2, dtype: torch.dtype = torch.float32,
                       seed: int = 0, max_shard_size: str | None = None, **config_overrides):
    """Builds a random tiny HF model of ``arch``; saves it (and a tokenizer) to ``out_dir`` if given.

    Returns ``(config, model)``; the model is in eval mode, in ``dtype``.
    """
    from transformers import AutoModelForCausalLM

    config = tiny_hf_config(arch, tie=tie, vocab_size=vocab_size, num_layers=num_layers,
                            **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.05 * torch.randn_like(param))
    model = model.to(dtype)
    if out_dir is not None:
        out_dir = Path(out_dir)
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(out_dir, **kwargs)
        write_tiny_tokenizer(out_dir, vocab_size)
    return config, model


def write_tiny_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """A word-level tokenizer ``tok0 .. tokN`` (the tools copy tokenizer files; tests check that)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"tok{i}": i for i in range(vocab_size - 1)}
    vocab["<unk>"] = vocab_size - 1
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(out_dir)


def hf_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved HF model directory, read with safetensors (the test oracle)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
             if index.exists() else ["model.safetensors"])
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(directory / name))
    return tensors
