"""Qwen2 / Qwen2.5: Llama plus q/k/v biases (fused like the weights)."""
from harness.models.mapping import QKV, param
from harness.models.mappings.llama import ATTENTION, HF_ATTENTION, TABLE as LLAMA

TABLE = LLAMA + (
    param(f"{ATTENTION}.linear_qkv.bias", [f"{HF_ATTENTION}.{p}_proj.bias" for p in "qkv"], QKV),
)
