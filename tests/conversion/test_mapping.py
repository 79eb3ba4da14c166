"""The declarative mapping: pure transforms, their TP shard helpers, and the tables' names."""
import pytest
import torch

from harness.models.hf_config import load_model_spec
from harness.models.mapping import (GATED_MLP, LOCAL_SPEC_RENAMES, QKV, REPLICATED, ROW, VOCAB,
                                    checkpoint_name, model_mapping)
from tests.support.tiny_hf import ARCHITECTURES, tiny_hf_config


def spec_of(arch, **kwargs):
    return load_model_spec(tiny_hf_config(arch, **kwargs))


def test_local_spec_renames_are_megatrons_own():
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    keys_map = get_gpt_layer_local_spec(normalization="RMSNorm").submodules.sharded_state_dict_keys_map
    assert keys_map == LOCAL_SPEC_RENAMES
    assert (checkpoint_name("decoder.layers.3.pre_mlp_layernorm.weight")
            == "decoder.layers.3.mlp.linear_fc1.layer_norm_weight")


def test_qkv_rows_are_grouped_per_query_group():
    spec = spec_of("qwen3")  # 8 heads, 2 groups, head_dim 32
    q_per_group, kv = 4, spec.kv_channels
    # Each row holds its own (head, row) label so the layout can be read back.
    q = torch.arange(8 * kv).float().unsqueeze(1)
    k = 1000 + torch.arange(2 * kv).float().unsqueeze(1)
    v = 2000 + torch.arange(2 * kv).float().unsqueeze(1)
    fused = QKV.to_megatron([q, k, v], spec)
    group1 = fused[(q_per_group + 2) * kv:]
    assert torch.equal(group1[: q_per_group * kv], q[q_per_group * kv:])
    assert torch.equal(group1[q_per_group * kv: (q_per_group + 1) * kv], k[kv:])
    assert torch.equal(group1[(q_per_group + 1) * kv:], v[kv:])
    # TP=2 gives each rank whole groups.
    assert torch.equal(QKV.shard(fused, 2, 1, spec), group1)


def test_gated_mlp_shard_is_gate_and_up_slices():
    spec = spec_of("llama")
    gate, up = torch.randn(96, 4), torch.randn(96, 4)
    full = GATED_MLP.to_megatron([gate, up], spec)
    shard = GATED_MLP.shard(full, 2, 1, spec)
    assert torch.equal(shard, torch.cat([gate[48:], up[48:]]))


@pytest.mark.parametrize("transform,shapes", [
    (REPLICATED, [(64,)]),
    (ROW, [(64, 96)]),
    (VOCAB, [(250, 64)]),
    (QKV, [(256, 64), (64, 64), (64, 64)]),
    (QKV, [(256,), (64,), (64,)]),
    (GATED_MLP, [(96, 64), (96, 64)]),
])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_transforms_invert_and_shards_reassemble(transform, shapes, tp):
    spec = spec_of("qwen3")
    hf = [torch.randn(shape) for shape in shapes]
    full = transform.to_megatron(hf, spec)
    back = transform.to_hf(full, spec)
    assert all(torch.equal(a, b) for a, b in zip(hf, back)) and len(back) == len(hf)
    shards = [transform.shard(full, tp, rank, spec) for rank in range(tp)]
    assert torch.equal(transform.unshard(shards, spec), full)


def test_vocab_is_padded_independently_of_tp():
    spec = spec_of("qwen2")
    full = VOCAB.to_megatron([torch.randn(250, 64)], spec)
    assert full.shape == (256, 64) and not full[250:].any()
    assert spec.padded_vocab_size(1) == spec.padded_vocab_size(2) == 256


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("tie", [False, True])
def test_table_names_every_hf_weight_once(arch, tie):
    from transformers import AutoModelForCausalLM

    config = tiny_hf_config(arch, tie=tie)
    with torch.device("meta"):
        hf_names = set(AutoModelForCausalLM.from_config(config).state_dict())
    if tie:
        hf_names.discard("lm_head.weight")
    mapped = model_mapping(load_model_spec(config)).hf_names()
    assert sorted(mapped) == sorted(hf_names)


def test_find_accepts_both_layer_spec_names_and_checks_the_layer():
    mapping = model_mapping(spec_of("qwen2"))
    p = mapping.find("decoder.layers.1.input_layernorm.weight")
    assert p.layer == 1 and p.hf_names == ("model.layers.1.input_layernorm.weight",)
    assert mapping.find("decoder.layers.1.self_attention.linear_qkv.bias").hf_names[2] == \
        "model.layers.1.self_attn.v_proj.bias"
    with pytest.raises(KeyError, match="not a parameter"):
        mapping.find("decoder.layers.2.mlp.linear_fc2.weight")  # only 2 layers
    with pytest.raises(KeyError, match="not a parameter"):
        model_mapping(spec_of("qwen2", tie=True)).find("output_layer.weight")
