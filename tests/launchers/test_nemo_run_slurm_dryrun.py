"""The batch scripts NeMo-Run's Slurm executor would submit (its dry run: nothing is submitted; an
`sbatch` that fails if called stands on PATH for the login-node check). They check what NeMo-Run
generates from our settings; running them needs a Slurm cluster."""
import os
import stat
import subprocess
import sys

import pytest

from tests.launchers.local_pods import ROOT

RAY_ON_SLURM = ROOT / "launchers" / "slurm" / "ray_cluster.sh"


def _dryrun(tmp_path, script, *arguments):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'a dry run must not submit' >&2\nexit 1\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "NEMORUN_HOME": str(tmp_path / "nemo_run"), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "COLUMNS": "400"}
    result = subprocess.run([sys.executable, f"launchers/nemo_run/{script}.py", "--executor", "slurm", "--dryrun",
                             "--partition", "debug", *arguments], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return " ".join(result.stdout.split())  # rich wraps long lines


def test_sft_batch_script_runs_one_torchrun_per_node(tmp_path):
    script = _dryrun(tmp_path, "sft", "--config", "configs/sft_tiny_cpu.yaml", "--nodes", "2", "--gpus-per-node", "2",
                     "--device", "cpu", "data.train_files=/data/t.parquet", "model.partial_pretrain=/models/m",
                     "trainer.logger=[console]")
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --partition=debug" in script
    assert "torchrun --rdzv-backend c10d --rdzv-endpoint $head_node_ip:29500" in script
    assert "--nnodes 2 --nproc-per-node 2 --node-rank $SLURM_NODEID" in script
    assert "-m harness.main_sft --config configs/sft_tiny_cpu.yaml data.train_files=/data/t.parquet" in script
    assert "'trainer.logger=[console]'" in script  # quoted for the batch shell


@pytest.mark.skipif(not RAY_ON_SLURM.is_file(), reason="launchers/slurm/ray_cluster.sh (the Slurm launcher) is not in "
                                                       "this checkout yet")
def test_grpo_batch_script_runs_main_ppo_through_the_ray_on_slurm_script(tmp_path):
    script = _dryrun(tmp_path, "grpo", "--config", "configs/grpo_tiny_cpu.yaml", "--nodes", "2", "--gpus-per-node",
                     "1", "--device", "cpu", "data.train_files=/data/t.parquet", "actor_rollout_ref.model.path=/m")
    assert "#SBATCH --nodes=2" in script
    assert "--nodes=1 --ntasks=1 --overlap bash launchers/slurm/ray_cluster.sh -- python -m harness.main_ppo" in script
    assert "trainer.nnodes=2 trainer.n_gpus_per_node=1 trainer.device=cpu ray_init.address=auto" in script
