"""Settings the launchers cannot use: one clear line on stderr naming the flag, key or file, exit code 2,
and nothing submitted or written."""
import subprocess
import sys

import pytest

from tests.launchers.local_pods import ROOT

RL_PATHS = ["data.train_files=/shared/t.parquet", "actor_rollout_ref.model.path=/shared/m"]


def _one_line_error(command, tmp_path, env=None):
    import os

    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NEMORUN_HOME": str(tmp_path / "nemo_run"), **(env or {})})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert len(lines) == 1, result.stderr
    assert not (tmp_path / "nemo_run" / "experiments").exists()  # nothing was submitted
    return lines[0]


@pytest.mark.parametrize("arguments, expected", [
    (["--gpus-per-node", "6", *RL_PATHS],
     "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=8 does not divide the 6 ranks per node"),
    (["--nodes", "3", *RL_PATHS], "world size 24 is not divisible by tensor x pipeline x context parallel"),
    (["actor_rollout_ref.rollout.tensor_model_parallel_size=16", *RL_PATHS],
     "actor_rollout_ref.rollout.tensor_model_parallel_size=16 does not divide the 8 ranks per node"),
    (["actor_rollout_ref.actor.ppo_mini_batchsize=4", *RL_PATHS], "did you mean 'actor_rollout_ref.actor.ppo_mini_batch_size'"),
    (["data.train_files=/shared/t.parquet"], "actor_rollout_ref.model.path is required"),
    (["--memory-per-node", "lots", *RL_PATHS], "--memory-per-node 'lots': not a Kubernetes quantity"),
    (["--name", "Not_A_Label", *RL_PATHS], "--name 'Not_A_Label': a RayJob name is a DNS-1035 label"),
], ids=["tp-over-gpus", "world-not-divisible", "sglang-over-node", "typo", "missing-model", "quantity", "name"])
def test_render_refuses_a_config_it_cannot_map(arguments, expected, tmp_path):
    out = tmp_path / "out.yaml"
    line = _one_line_error(["launchers/k8s/render.py", "--config", "configs/grpo_qwen2.5_32b.yaml", "--out", str(out),
                            *arguments], tmp_path)
    assert line.startswith("render: ") and expected in line, line
    assert not out.exists()


def test_render_refuses_an_sft_layout_that_does_not_divide(tmp_path):
    line = _one_line_error(["launchers/k8s/render.py", "--config", "configs/sft_qwen2.5_32b.yaml", "--nodes", "3",
                            "--gpus-per-node", "4", "data.train_files=t", "model.partial_pretrain=m",
                            "megatron.tensor_model_parallel_size=8", "megatron.pipeline_model_parallel_size=1"], tmp_path)
    assert "megatron.tensor_model_parallel_size=8 does not divide the 4 ranks per node" in line


def test_render_names_a_missing_config_file(tmp_path):
    line = _one_line_error(["launchers/k8s/render.py", "--config", "configs/nope.yaml"], tmp_path)
    assert line == "render: configs/nope.yaml: config file not found"


@pytest.mark.parametrize("script, arguments, env, expected", [
    ("grpo", ["--executor", "ray-on-mars"], {}, "--executor 'ray-on-mars' ($HARNESS_EXECUTOR): unknown; choose from "
                                                "local, slurm, kuberay"),
    ("sft", ["--executor", "kuberay"], {}, "--executor 'kuberay' ($HARNESS_EXECUTOR): unknown; choose from local, slurm"),
    ("sft", [], {"HARNESS_EXECUTOR": "lepton"}, "--executor 'lepton' ($HARNESS_EXECUTOR): unknown"),
    # no sbatch on PATH (not the login node) and no --tunnel-host
    ("sft", ["--executor", "slurm"], {"PATH": "/nonexistent"}, "slurm executor: no sbatch on this machine and no "
                                                               "--tunnel-host ($HARNESS_TUNNEL_HOST)"),
    ("sft", ["--executor", "slurm", "--tunnel-host", "login.example"], {},
     "slurm executor: --job-dir ($HARNESS_JOB_DIR) is required with --tunnel-host"),
    ("grpo", ["--executor", "local", "--nodes", "2"], {}, "--nodes 2: the local executor runs on this machine only"),
    ("grpo", ["--executor", "slurm", "--config", "configs/grpo_qwen2.5_32b.yaml", "--gpus-per-node", "4"], {},
     "tensor_model_parallel_size=8 does not divide the 4 ranks per node (--gpus-per-node)"),
], ids=["unknown-executor", "sft-has-no-kuberay", "unknown-from-env", "no-tunnel-host", "ssh-without-job-dir",
        "local-multinode", "slurm-layout"])
def test_nemo_run_scripts_refuse_settings_they_cannot_use(script, arguments, env, expected, tmp_path):
    config = "configs/sft_tiny_cpu.yaml" if script == "sft" else "configs/grpo_tiny_cpu.yaml"
    command = [f"launchers/nemo_run/{script}.py", "--config", config, *arguments, "data.train_files=t",
               "model.partial_pretrain=m" if script == "sft" else "actor_rollout_ref.model.path=m"]
    line = _one_line_error(command, tmp_path, env)
    assert line.startswith(f"{script}: ") and expected in line, line
