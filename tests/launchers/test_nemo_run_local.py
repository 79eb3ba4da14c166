"""The NeMo-Run experiments with the local executor: SFT (2 torchrun ranks, TP=2) and one GRPO step
run as real NeMo-Run experiments, end SUCCEEDED, and their logs are read back through NeMo-Run's own
CLI (`nemo experiment logs`) from a fresh process."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launchers.local_pods import ROOT, VENV_BIN
from tests.launchers.tiny_runs import tiny_grpo_overrides


def _experiment(script, arguments, home):
    env = {**os.environ, "NEMORUN_HOME": str(home), "OMP_NUM_THREADS": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, f"launchers/nemo_run/{script}.py", "--executor", "local", *arguments],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    found = re.search(r"^experiment (\S+): (\w+) (\w+)$", result.stdout, re.MULTILINE)
    assert result.returncode == 0 and found, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    experiment_id, task, state = found.groups()
    assert (task, state) == (script, "SUCCEEDED")
    logs = subprocess.run([f"{VENV_BIN}/nemo", "experiment", "logs", experiment_id, "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert (Path(home) / "experiments" / f"harness-{script}" / experiment_id).is_dir()
    return logs.stdout + logs.stderr


@pytest.mark.timeout(600)
def test_sft_experiment_runs_locally_and_its_logs_read_back(tiny_assets, tmp_path):
    run_dir = tmp_path / "sft"
    logs = _experiment("sft", [
        "--config", "configs/sft_tiny_cpu.yaml", "--device", "cpu", "--gpus-per-node", "2",
        f"data.train_files={tiny_assets / 'data' / 'sft_train.parquet'}",
        f"data.val_files={tiny_assets / 'data' / 'sft_val.parquet'}", f"model.partial_pretrain={tiny_assets / 'model'}",
        f"trainer.default_local_dir={run_dir}", "trainer.total_training_steps=2", "data.train_batch_size=8",
        "data.micro_batch_size_per_gpu=4", "trainer.logger=[console]", "trainer.export_hf=false",
    ], tmp_path / "nemo_run")
    assert "sft finished: {'steps': 2" in logs
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == [1, 2]


@pytest.mark.timeout(600)
def test_grpo_experiment_runs_locally_and_its_logs_read_back(tiny_assets, tmp_path):
    run_dir = tmp_path / "grpo"
    logs = _experiment("grpo", ["--config", "configs/grpo_tiny_cpu.yaml", *tiny_grpo_overrides(tiny_assets, run_dir)],
                       tmp_path / "nemo_run")
    assert "ppo finished: {'steps': 1" in logs
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "actor/pg_loss" in r] == [1]
