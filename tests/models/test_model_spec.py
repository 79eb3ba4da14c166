"""Reading HF configs into a ModelSpec, and the clear errors for what we cannot build."""
import pytest

from harness.config import ParallelConfig
from harness.models import UnsupportedModelError, load_model_spec
from harness.selfcheck import TINY_CONFIGS


def test_specs_of_each_architecture():
    qwen2, qwen3, llama = (load_model_spec(TINY_CONFIGS[a]) for a in ("qwen2", "qwen3", "llama"))
    assert (qwen2.add_qkv_bias, qwen2.qk_layernorm, qwen2.kv_channels) == (True, False, 8)
    assert (qwen3.add_qkv_bias, qwen3.qk_layernorm, qwen3.kv_channels, qwen3.tie_word_embeddings) == (False, True, 32, True)
    assert llama.rope_scaling["original_max_position_embeddings"] == 64
    assert qwen2.num_query_groups == 2 and qwen2.num_attention_heads == 8


def test_reads_config_json_directory_and_transformers_5_rope_layout(tmp_path):
    import json

    config = dict(TINY_CONFIGS["llama"])
    scaling = config.pop("rope_scaling")
    config["rope_parameters"] = {"rope_theta": 500000.0, **scaling}
    del config["rope_theta"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = load_model_spec(tmp_path)
    assert spec.rope_theta == 500000.0 and spec.rope_scaling["factor"] == 8.0


def test_padded_vocab_does_not_depend_on_tp():
    spec = load_model_spec(TINY_CONFIGS["qwen2"])
    assert {spec.padded_vocab_size(tp) for tp in (1, 2, 4, 8)} == {256}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}, "MixtralForCausalLM is not supported; supported: Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn' is not supported; supported: default, llama3"),
        ({"use_sliding_window": True}, "use_sliding_window"),
    ],
)
def test_unsupported_is_named(change, message):
    with pytest.raises(UnsupportedModelError) as error:
        load_model_spec({**TINY_CONFIGS["qwen2"], **change})
    assert message in str(error.value)


@pytest.mark.parametrize(
    "parallel, message",
    [
        (ParallelConfig(tensor_model_parallel_size=3), "tensor_model_parallel_size=3 does not divide num_attention_heads=8"),
        (ParallelConfig(tensor_model_parallel_size=4), "tensor_model_parallel_size=4 does not divide num_key_value_heads=2"),
        (ParallelConfig(pipeline_model_parallel_size=8), "pipeline_model_parallel_size=8 is larger than num_hidden_layers=4"),
        (ParallelConfig(pipeline_model_parallel_size=3), "num_hidden_layers=4 is not divisible by pipeline stages"),
        (ParallelConfig(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=4), "(pipeline_model_parallel_size=2 x virtual_pipeline_model_parallel_size=4 = 8)"),
    ],
)
def test_layout_that_does_not_fit_fails_before_any_allocation(parallel, message):
    import torch.distributed

    from harness.models.builder import build_model

    spec = load_model_spec(TINY_CONFIGS["qwen2"])
    with pytest.raises(ValueError) as error:
        build_model(spec, parallel)  # no process group exists: the check must come first
    assert message in str(error.value)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tensor_model_parallel_size=0), "tensor_model_parallel_size=0: must be a positive integer"),
        (dict(sequence_parallel=True), "sequence_parallel=true needs tensor_model_parallel_size > 1"),
        (dict(virtual_pipeline_model_parallel_size=2), "needs pipeline_model_parallel_size > 1"),
        (dict(recompute_granularity="layers"), "recompute_granularity='layers': must be null, selective or full"),
        (dict(recompute_granularity="selective", recompute_num_layers=2), "apply only to recompute_granularity=full"),
        (dict(recompute_granularity="full", recompute_method="every"), "recompute_method='every': must be uniform or block"),
    ],
)
def test_parallel_config_errors_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ParallelConfig(**kwargs)


def test_full_recompute_defaults_to_uniform_single_layers():
    parallel = ParallelConfig(recompute_granularity="full")
    assert (parallel.recompute_method, parallel.recompute_num_layers) == ("uniform", 1)
    assert ParallelConfig().recompute_options() == {"recompute_granularity": None, "recompute_method": None,
                                                   "recompute_num_layers": None}


def test_llama3_frequencies_match_transformers():
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from harness.models.builder import llama3_inverse_frequencies

    spec = load_model_spec(TINY_CONFIGS["llama"])
    hf = LlamaConfig(**{k: v for k, v in TINY_CONFIGS["llama"].items() if k not in ("architectures", "model_type")})
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    assert torch.equal(llama3_inverse_frequencies(spec), expected)
    # The smoothing band is exercised: some frequencies are scaled, some kept, some interpolated.
    plain = 1.0 / (spec.rope_theta ** (torch.arange(0, spec.kv_channels, 2).float() / spec.kv_channels))
    ratio = plain / expected
    assert (ratio == 1).any() and (ratio == 8).any() and ((ratio > 1) & (ratio < 8)).any()
