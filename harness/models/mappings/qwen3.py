"""Qwen3: Llama plus per-head q/k RMSNorms (shared by all heads, so replicated over TP)."""
from harness.models.mapping import REPLICATED, param
from harness.models.mappings.llama import ATTENTION, HF_ATTENTION, TABLE as LLAMA

TABLE = LLAMA + (
    param(f"{ATTENTION}.q_layernorm.weight", f"{HF_ATTENTION}.q_norm.weight", REPLICATED),
    param(f"{ATTENTION}.k_layernorm.weight", f"{HF_ATTENTION}.k_norm.weight", REPLICATED),
)
