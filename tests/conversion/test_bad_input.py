"""Bad input: a clear error naming the file, tensor or key, exit code 2, and nothing half-written."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.checkpoint.convert import hf_to_mcore
from tests.conversion.conftest import load_tool

hf_to_mcore_tool = load_tool("convert_hf_to_mcore")
mcore_to_hf_tool = load_tool("convert_mcore_to_hf")


def single_file_model(tiny_hf_dir, arch="qwen2", **kwargs):
    return tiny_hf_dir(arch, max_shard_size="1GB", **kwargs)


def convert_fails(capsys, hf_dir, output, *extra):
    """Runs the tool, expects exit 2; returns its error message. Nothing may be left behind."""
    capsys.readouterr()  # drop what building the tiny model printed
    assert hf_to_mcore_tool.main(["--hf-path", str(hf_dir), "--output", str(output), *extra]) == 2
    message = capsys.readouterr().err
    assert "error: " in message
    assert not list(output.parent.glob(f".{output.name}.*")), "temporary directory left behind"
    return message[message.index("error: "):]


def rewrite_weights(hf_dir, edit):
    path = hf_dir / "model.safetensors"
    tensors = edit(load_file(path))
    save_file(tensors, path, metadata={"format": "pt"})


def test_unsupported_architecture_lists_the_supported_ones(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    config["architectures"] = ["MistralForCausalLM"]
    (hf_dir / "config.json").write_text(json.dumps(config))
    message = convert_fails(capsys, hf_dir, tmp_path / "out")
    assert "MistralForCausalLM is not supported" in message
    assert all(a in message for a in ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM"))
    assert not (tmp_path / "out").exists()


def test_missing_tensor_is_named(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir)
    rewrite_weights(hf_dir, lambda t: {k: v for k, v in t.items()
                                       if k != "model.layers.1.mlp.up_proj.weight"})
    message = convert_fails(capsys, hf_dir, tmp_path / "out")
    assert "missing tensor model.layers.1.mlp.up_proj.weight (shape [96, 64])" in message


def test_extra_tensor_is_named(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir)
    rewrite_weights(hf_dir, lambda t: {**t, "model.layers.0.mlp.experts.weight": torch.zeros(2)})
    message = convert_fails(capsys, hf_dir, tmp_path / "out")
    assert "extra tensor model.layers.0.mlp.experts.weight" in message


def test_untied_weights_with_a_tying_config_are_refused(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir, tie=False)
    config = json.loads((hf_dir / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (hf_dir / "config.json").write_text(json.dumps(config))
    message = convert_fails(capsys, hf_dir, tmp_path / "out")
    assert "extra tensor lm_head.weight" in message and "ties the embeddings" in message


def test_config_that_does_not_match_the_shapes_names_them(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir, "qwen3")
    config = json.loads((hf_dir / "config.json").read_text())
    config["intermediate_size"] = 128
    config["num_hidden_layers"] = 3
    del config["layer_types"]  # transformers 5 checks it against num_hidden_layers
    (hf_dir / "config.json").write_text(json.dumps(config))
    message = convert_fails(capsys, hf_dir, tmp_path / "out")
    assert ("tensor model.layers.0.mlp.gate_proj.weight has shape [96, 64], "
            "the config needs [128, 64]") in message
    assert "missing tensor model.layers.2.self_attn.q_norm.weight" in message


def test_truncated_safetensors_is_named(tiny_hf_dir, tmp_path, capsys):
    hf_dir = tiny_hf_dir("llama")  # several shards
    shard = sorted(hf_dir.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    message = convert_fails(capsys, hf_dir, tmp_path / "out")
    assert f"{shard}: truncated: tensor" in message


def test_corrupt_safetensors_header_is_named(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir)
    path = hf_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff" * 8
    path.write_bytes(bytes(data))
    assert f"{path}: corrupt header" in convert_fails(capsys, hf_dir, tmp_path / "out")


@pytest.mark.parametrize("layout,expected", [
    (["--tp", "3"], "tensor_model_parallel_size=3 does not divide num_attention_heads=8"),
    (["--tp", "4"], "tensor_model_parallel_size=4 does not divide num_key_value_heads=2"),
    (["--pp", "3"], "pipeline_model_parallel_size=3 is larger than num_hidden_layers=2"),
])
def test_layout_that_cannot_divide_the_model(tiny_hf_dir, tmp_path, capsys, layout, expected):
    hf_dir = single_file_model(tiny_hf_dir)
    assert expected in convert_fails(capsys, hf_dir, tmp_path / "out", *layout)


def test_existing_output_needs_force_and_survives_a_failed_replacement(tiny_hf_dir, tmp_path, capsys):
    hf_dir = single_file_model(tiny_hf_dir)
    output = tmp_path / "out"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    assert "exists and is not empty; pass --force" in convert_fails(capsys, hf_dir, output)
    # --force with bad input: the old output stays as it was.
    assert "does not divide" in convert_fails(capsys, hf_dir, output, "--force", "--tp", "3")
    assert (output / "precious.txt").read_text() == "keep me"
    # --force with good input replaces it.
    assert hf_to_mcore_tool.main(["--hf-path", str(hf_dir), "--output", str(output), "--force"]) == 0
    assert not (output / "precious.txt").exists() and (output / "metadata.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-qwen2", "out"]


def test_a_failure_while_writing_leaves_nothing(tiny_hf_dir, tmp_path, monkeypatch):
    from harness.models.safetensors_io import SafetensorsReader

    hf_dir = single_file_model(tiny_hf_dir)

    def failing_read(self, name, rows=None):
        raise OSError(f"disk gone while reading {name}")

    monkeypatch.setattr(SafetensorsReader, "read", failing_read)
    with pytest.raises(OSError, match="disk gone while reading model.embed_tokens.weight"):
        hf_to_mcore(hf_dir, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-qwen2"]


def test_mcore_to_hf_names_checkpoint_keys_that_do_not_match_the_config(tiny_hf_dir, tmp_path, capsys):
    untied = single_file_model(tiny_hf_dir, "qwen3", tie=False)
    hf_to_mcore(untied, tmp_path / "mcore")
    tied = tmp_path / "tied-config"
    tied.mkdir()
    config = json.loads((untied / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True,
                                                  "head_dim": 16}))
    argv = ["--mcore-path", str(tmp_path / "mcore"), "--output", str(tmp_path / "hf"),
            "--hf-config", str(tied)]
    capsys.readouterr()
    assert mcore_to_hf_tool.main(argv) == 2
    message = capsys.readouterr().err
    assert "extra tensor output_layer.weight" in message
    assert "tensor decoder.layers.self_attention.q_layernorm.weight has shape [2, 32], " \
           "the config needs [2, 16]" in message
    assert not (tmp_path / "hf").exists()
    assert mcore_to_hf_tool.main(["--mcore-path", str(tmp_path / "nowhere"),
                                  "--output", str(tmp_path / "hf")]) == 2
    assert "no config.json" in capsys.readouterr().err
