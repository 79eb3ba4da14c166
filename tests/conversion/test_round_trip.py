"""HF -> torch_dist -> HF is bit-identical for every tensor; the files are what HF and megatron read."""
import json

import pytest
import torch

import harness
from harness.checkpoint.convert import METADATA_FILE, hf_to_mcore, mcore_to_hf
from harness.checkpoint.streaming import CheckpointReader
from tests.support.tiny_hf import hf_state_dict

CASES = [("qwen2", False), ("qwen2", True), ("qwen3", True), ("qwen3", False), ("llama", False),
         ("llama", True)]


@pytest.mark.parametrize("arch,tie", CASES, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in CASES])
def test_hf_to_mcore_to_hf_is_bit_identical(tiny_hf_dir, tmp_path, arch, tie):
    hf_dir = tiny_hf_dir(arch, tie=tie)
    hf_to_mcore(hf_dir, tmp_path / "mcore")
    mcore_to_hf(tmp_path / "mcore", tmp_path / "back", max_shard_bytes=100_000)
    original, back = hf_state_dict(hf_dir), hf_state_dict(tmp_path / "back")
    assert sorted(back) == sorted(original)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_bf16_round_trip_and_checkpoint_layout(tiny_hf_dir, tmp_path):
    hf_dir = tiny_hf_dir("qwen2", dtype=torch.bfloat16)
    # Vocabulary row blocks of 7 rows: the last one straddles the padding (rows 252..256).
    hf_to_mcore(hf_dir, tmp_path / "mcore", vocab_block_bytes=7 * 64 * 2)
    stored = CheckpointReader(tmp_path / "mcore").tensor_metadata()
    # megatron's own layout: layers stacked on a leading axis, vocabulary padded to 256, [gate; up].
    assert stored["decoder.layers.mlp.linear_fc1.weight"] == ((2, 192, 64), torch.bfloat16)
    assert stored["embedding.word_embeddings.weight"] == ((256, 64), torch.bfloat16)
    assert stored["decoder.layers.self_attention.linear_qkv.bias"][0] == (2, 96)
    metadata = json.loads((tmp_path / "mcore" / METADATA_FILE).read_text())
    assert metadata["architecture"] == "qwen2" and metadata["dtype"] == "bf16"
    assert metadata["harness_version"] == harness.__version__
    assert metadata["source"] == str(hf_dir.absolute())
    for side_file in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "mcore" / side_file).exists(), side_file

    mcore_to_hf(tmp_path / "mcore", tmp_path / "back")
    original, back = hf_state_dict(hf_dir), hf_state_dict(tmp_path / "back")
    assert all(back[n].dtype == torch.bfloat16 and torch.equal(back[n], t) for n, t in original.items())


def test_dtype_conversion_and_from_pretrained(tiny_hf_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = tiny_hf_dir("llama")
    hf_to_mcore(hf_dir, tmp_path / "mcore", dtype=torch.bfloat16)
    mcore_to_hf(tmp_path / "mcore", tmp_path / "back")
    original, back = hf_state_dict(hf_dir), hf_state_dict(tmp_path / "back")
    assert all(torch.equal(back[n], t.to(torch.bfloat16)) for n, t in original.items())

    mcore_to_hf(tmp_path / "mcore", tmp_path / "back32", dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "back32")
    assert model.dtype == torch.float32
    assert json.loads((tmp_path / "back32" / "config.json").read_text())["dtype"] == "float32"
    assert torch.equal(model.state_dict()["model.norm.weight"],
                       original["model.norm.weight"].to(torch.bfloat16).float())
    assert AutoTokenizer.from_pretrained(tmp_path / "back32").convert_tokens_to_ids("tok7") == 7
