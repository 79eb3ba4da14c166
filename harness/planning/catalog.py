"""Published `config.json` values of well-known models, so the planner runs without a hub.

Values as shipped on the Hugging Face hub for the base models (Qwen/Qwen2.5-0.5B, -7B, -32B,
Qwen/Qwen3-8B, -32B, meta-llama/Llama-3.1-8B, -70B); read from copies of those files in public
repositories, since no hub is reachable here. Only the keys the harness reads are kept. The
instruct variants share them (Qwen2.5-Instruct ships max_position_embeddings 32768).
`tiny-char-qwen2` is the quickstart's own model (tools/make_tiny_model.py --size small).
"""
from typing import Dict, Optional

_QWEN2 = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", rope_theta=1000000.0,
              use_sliding_window=False, max_position_embeddings=131072)
_QWEN3 = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_act="silu", rope_theta=1000000,
              head_dim=128, attention_bias=False, rms_norm_eps=1e-06, vocab_size=151936,
              max_position_embeddings=40960, tie_word_embeddings=False)
_LLAMA31 = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", attention_bias=False,
                mlp_bias=False, rms_norm_eps=1e-05, rope_theta=500000.0, vocab_size=128256,
                max_position_embeddings=131072, tie_word_embeddings=False,
                rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=8192, rope_type="llama3"))

KNOWN_MODELS: Dict[str, dict] = {
    "Qwen2.5-0.5B": dict(_QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-06, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768),
    "Qwen2.5-7B": dict(_QWEN2, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-06, vocab_size=152064,
                       tie_word_embeddings=False),
    "Qwen2.5-32B": dict(_QWEN2, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                        num_attention_heads=40, num_key_value_heads=8, rms_norm_eps=1e-05, vocab_size=152064,
                        tie_word_embeddings=False),
    "Qwen3-8B": dict(_QWEN3, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8),
    "Qwen3-32B": dict(_QWEN3, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                      num_attention_heads=64, num_key_value_heads=8),
    "Llama-3.1-8B": dict(_LLAMA31, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8),
    "Llama-3.1-70B": dict(_LLAMA31, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                          num_attention_heads=64, num_key_value_heads=8),
    "tiny-char-qwen2": dict(_QWEN2, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                            num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-06, vocab_size=259,
                            tie_word_embeddings=False, max_position_embeddings=512),
}


def _normalise(name: str) -> str:
    # "Qwen/Qwen2.5-32B-Instruct", "qwen2.5-32b" and "Qwen2.5-32B" name the same shape.
    name = name.rsplit("/", 1)[-1].lower()
    for suffix in ("-instruct", "-base"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def known_model_config(name: str) -> Optional[dict]:
    """A copy of the published config of `name`, or None."""
    wanted = _normalise(name)
    for known, config in KNOWN_MODELS.items():
        if _normalise(known) == wanted:
            return dict(config)
    return None
