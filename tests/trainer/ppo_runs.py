"""Shared by the RL end-to-end tests: tiny assets, the main_ppo command line, reading metrics."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
HOOKS = "tests/trainer/ppo_hooks.py"
STEPS = 4


def make_assets(root: Path, arch: str = "qwen2", dtype: str = "float32") -> Path:
    """char_count data (128 train / 16 validation prompts) and a tiny random model."""
    for command in (
        [PYTHON, "tools/prepare_data.py", "char_count", "--out", str(root / "data"), "--n-train", "128", "--n-val", "16"],
        [PYTHON, "tools/make_tiny_model.py", "--arch", arch, "--out", str(root / "model"), "--dtype", dtype],
    ):
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return root


def ppo_command(assets, run_dir, *extra, train_file=None):
    return [
        PYTHON, "-m", "harness.main_ppo", "--config", "configs/grpo_tiny_cpu.yaml",
        f"data.train_files={train_file or assets / 'data' / 'rl_train.parquet'}",
        f"data.val_files={assets / 'data' / 'rl_val.parquet'}",
        f"actor_rollout_ref.model.path={assets / 'model'}", f"trainer.default_local_dir={run_dir}",
        *tiny_sizes(), *extra,
    ]


def tiny_sizes():
    """The tiny run's sizes and reward on top of configs/grpo_tiny_cpu.yaml (data and model paths apart)."""
    return [
        "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.optim.lr=1e-3", f"trainer.total_training_steps={STEPS}", "trainer.save_freq=2",
        "trainer.test_freq=2", "trainer.logger=[console]", f"custom_reward_function.path={HOOKS}",
        "custom_reward_function.name=length_score",
    ]


def run(command, timeout=600, env=None, check=True):
    result = subprocess.run(command, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}\n{result.stderr[-4000:]}")
    return result


def metrics(run_dir):
    with open(Path(run_dir) / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r for r in records if "actor/pg_loss" in r}, [r for r in records if "val/accuracy" in r]
