"""Llama 3.x: the base table that Qwen2 and Qwen3 extend."""
from harness.models.mapping import GATED_MLP, QKV, REPLICATED, ROW, VOCAB, param

ATTENTION = "decoder.layers.*.self_attention"
HF_ATTENTION = "model.layers.*.self_attn"

TABLE = (
    param("embedding.word_embeddings.weight", "model.embed_tokens.weight", VOCAB),
    param("decoder.final_layernorm.weight", "model.norm.weight", REPLICATED),
    param("output_layer.weight", "lm_head.weight", VOCAB),
    param(f"{ATTENTION}.linear_qkv.layer_norm_weight", "model.layers.*.input_layernorm.weight",
          REPLICATED),
    param(f"{ATTENTION}.linear_qkv.weight",
          [f"{HF_ATTENTION}.{p}_proj.weight" for p in "qkv"], QKV),
    param(f"{ATTENTION}.linear_proj.weight", f"{HF_ATTENTION}.o_proj.weight", ROW),
    param("decoder.layers.*.mlp.linear_fc1.layer_norm_weight",
          "model.layers.*.post_attention_layernorm.weight", REPLICATED),
    param("decoder.layers.*.mlp.linear_fc1.weight",
          ["model.layers.*.mlp.gate_proj.weight", "model.layers.*.mlp.up_proj.weight"], GATED_MLP),
    param("decoder.layers.*.mlp.linear_fc2.weight", "model.layers.*.mlp.down_proj.weight", ROW),
)
