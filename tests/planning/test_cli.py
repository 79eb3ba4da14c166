"""tools/plan_parallelism.py: exit 0 fits / 1 does not, --json's keys, and one clear line (exit 2)
for each kind of bad input."""
import importlib.util
import json

import pytest

from tests.planning.support import REPO

spec = importlib.util.spec_from_file_location("plan_parallelism", REPO / "tools" / "plan_parallelism.py")
plan_parallelism = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plan_parallelism)


def run(capsys, *argv):
    code = plan_parallelism.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_of_a_config_that_fits(capsys, tmp_path):
    config = REPO / "configs" / "grpo_qwen2.5_7b.yaml"
    code, out, err = run(capsys, "--model", "Qwen2.5-7B", "--config", config, "--gpus", 8, "--gpu-mem", 80, "--json")
    result = json.loads(out)
    assert code == 0 and result["fits"], result["reasons"]
    assert {"fits", "layout", "per_gpu_gb", "reasons"} <= set(result)
    layout = result["layout"]
    assert {"tp", "pp", "dp"} <= set(layout["actor"]) and {"tp", "servers"} <= set(layout["rollout"])
    assert {"weights", "grads", "optimizer", "activations"} <= set(result["per_gpu_gb"]["actor"])
    assert {"weights", "kv_cache", "engine_overhead"} <= set(result["per_gpu_gb"]["rollout"])
    assert result["per_gpu_gb"]["reference"]["weights"] > 0


def test_a_config_that_does_not_fit_exits_1_with_reasons(capsys):
    config = REPO / "configs" / "grpo_qwen2.5_7b.yaml"
    code, out, _ = run(capsys, "--model", "Qwen2.5-7B", "--config", config, "--gpus", 8, "--gpu-mem", 24)
    assert code == 1
    assert "does NOT fit" in out and "> 24 GB" in out


def test_proposals_from_an_hf_directory(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(plan_parallelism.catalog.KNOWN_MODELS["Qwen3-8B"]))
    code, out, _ = run(capsys, "--model", tmp_path, "--gpus", 8, "--gpu-mem", 80, "--workload", "sft", "--json")
    result = json.loads(out)
    assert code == 0 and result["fits"] and result["proposals"]
    assert all(p["fits"] for p in result["proposals"])


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model"], "--model /no/such/model: no such directory, and not a known model name"),
    (["--model", "Qwen2.5-7B", "--gpus", "12"], "--gpus 12 is not a multiple of --gpus-per-node 8"),
    (["--model", "Qwen2.5-7B", "--gpu-mem", "0"], "--gpu-mem 0.0: must be a positive number of GB"),
    (["--model", "Qwen2.5-7B", "--gpu-mem", "-80"], "--gpu-mem -80.0: must be a positive number of GB"),
    (["--model", "Qwen2.5-7B", "--gpus", "0"], "--gpus 0: must be a positive whole number"),
    (["--model", "Qwen2.5-7B", "--config", "/no/such.yaml"], "/no/such.yaml: config file not found"),
])
def test_bad_input_gets_one_line(capsys, argv, message):
    argv = argv + (["--gpus", "8"] if "--gpus" not in argv else [])
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err


def test_unsupported_architecture_gets_one_line(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}))
    code, _, err = run(capsys, "--model", tmp_path, "--gpus", 8)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "architecture MistralForCausalLM is not supported" in err


def test_config_with_a_bad_key_gets_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  n_gpus_per_nod: 8\nactor_rollout_ref:\n  rollout:\n    n: 4\n")
    code, _, err = run(capsys, "--model", "Qwen2.5-7B", "--config", bad, "--gpus", 8)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown key 'trainer.n_gpus_per_nod'" in err
