"""Settings the launchers cannot use: one clear line on stderr naming the flag, key or file, exit code 2,
and nothing submitted or written."""
import os
import subprocess
import sys

import pytest

from tests.launchers.local_pods import ROOT

pytestmark = pytest.mark.timeout(180)  # each: one short subprocess, no Slurm
RL_PATHS = ["data.train_files=/shared/t.parquet", "actor_rollout_ref.model.path=/shared/m"]


def _one_line_error(command, tmp_path, env=None):
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NEMORUN_HOME": str(tmp_path / "nemo_home"), **(env or {})})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert len(lines) == 1, result.stderr
    assert not (tmp_path / "nemo_home" / "experiments").exists()  # nothing was submitted
    return lines[0]


@pytest.mark.parametrize("arguments, expected", [
    (["--gpus-per-node", "6", *RL_PATHS],
     "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4 does not divide the 6 ranks per node"),
    (["--nodes", "3", *RL_PATHS], "world size 24 is not divisible by tensor x pipeline x context parallel"),
    (["actor_rollout_ref.rollout.tensor_model_parallel_size=16", *RL_PATHS],
     "actor_rollout_ref.rollout.tensor_model_parallel_size=16 > trainer.n_gpus_per_node=8: an SGLang server never "
     "spans nodes"),
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
    ("grpo", ["--executor", "slurm", "--preempt-signal", "B:USR1@900"], {},
     "--preempt-signal B:USR1@900 ($HARNESS_SLURM_SIGNAL): NeMo-Run's batch shell does not forward signals"),
    ("sft", ["--executor", "slurm", "--retries", "-1"], {}, "--retries -1 ($HARNESS_SLURM_RETRIES): must be 0 or more"),
    # NeMo-Run rewrites "/nemo_run" in a container-less batch script (sbatch must be on PATH: the login node)
    ("sft", ["--executor", "slurm", "trainer.default_local_dir=/scratch/nemo_run/sft"], {},
     "the override trainer.default_local_dir=/scratch/nemo_run/sft: contains '/nemo_run', which NeMo-Run rewrites"),
    # The config and its overrides are checked before anything is submitted, for every executor.
    ("sft", ["--executor", "slurm", "trainer.total_trainig_steps=2"], {},
     "configs/sft_tiny_cpu.yaml: command line: unknown key 'trainer.total_trainig_steps'; did you mean "
     "'trainer.total_training_steps'?"),
    ("grpo", ["--executor", "local", "trainer.nnodes"], {},
     "configs/grpo_tiny_cpu.yaml: overrides must look like key=value (verl / Hydra style), got: trainer.nnodes"),
    ("sft", ["--executor", "slurm", "--device", "cpu", "--nodes", "2", "--gpus-per-node", "1",
             "megatron.tensor_model_parallel_size=2"], {},
     "megatron.tensor_model_parallel_size=2 does not divide the 1 ranks per node (--gpus-per-node)"),
    ("sft", ["--executor", "slurm", "--nodes", "two"], {}, "argument --nodes: invalid int value: 'two' (see --help)"),
    ("grpo", ["--executor", "slurm"], {"HARNESS_SLURM_RETRIES": "3x"}, "$HARNESS_SLURM_RETRIES='3x': not an integer"),
], ids=["unknown-executor", "sft-has-no-kuberay", "unknown-from-env", "no-tunnel-host", "ssh-without-job-dir",
        "local-multinode", "slurm-layout", "batch-shell-signal", "negative-retries", "nemo-run-path", "typo-key",
        "override-without-value", "sft-layout", "flag-not-an-int", "variable-not-an-int"])
def test_nemo_run_scripts_refuse_settings_they_cannot_use(script, arguments, env, expected, tmp_path):
    config = "configs/sft_tiny_cpu.yaml" if script == "sft" else "configs/grpo_tiny_cpu.yaml"
    command = [f"launchers/nemo_run/{script}.py", "--config", config, *arguments, "data.train_files=t",
               "model.partial_pretrain=m" if script == "sft" else "actor_rollout_ref.model.path=m"]
    # The login node's sbatch, which must not be called: these refusals do not need a Slurm cluster.
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir()
    sbatch.write_text("#!/bin/sh\necho 'refused settings must not be submitted' >&2\nexit 1\n")
    sbatch.chmod(0o755)
    line = _one_line_error(command, tmp_path, {"PATH": f"{sbatch.parent}:{os.environ['PATH']}", **env})
    assert line.startswith(f"{script}: ") and expected in line, line
