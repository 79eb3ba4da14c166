"""The SFT trainer end to end on 2 ranks (TP=2): exact resume after SIGKILL, HF export of the best
checkpoint, and bad input refused before any compute with the file / row / key named."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TORCHRUN = str(Path(PYTHON).with_name("torchrun"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 24


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_assets")
    for command in (
        [PYTHON, "tools/prepare_data.py", "char_count", "--out", str(root / "data"), "--n-train", "256", "--n-val", "32"],
        [PYTHON, "tools/make_tiny_model.py", "--arch", "qwen2", "--out", str(root / "model")],
    ):
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return root


def sft_command(assets, run_dir, *extra):
    return [
        TORCHRUN, "--nproc_per_node", "2", "-m", "harness.main_sft", "--config", "configs/sft_tiny_cpu.yaml",
        f"data.train_files={assets / 'data' / 'sft_train.parquet'}", f"data.val_files={assets / 'data' / 'sft_val.parquet'}",
        f"model.partial_pretrain={assets / 'model'}", f"trainer.default_local_dir={run_dir}",
        "data.train_batch_size=32", "data.micro_batch_size_per_gpu=8", f"trainer.total_training_steps={STEPS}",
        "trainer.save_freq=4", "trainer.test_freq=4", "trainer.logger=[console]", "megatron.tensor_model_parallel_size=2",
        *extra,
    ]


def losses(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return {r["step"]: r["train/loss"] for r in map(json.loads, f)}


def test_resume_after_sigkill_matches_uninterrupted_run(assets, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(sft_command(assets, whole), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        sft_command(assets, killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latest = killed / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 300
        while not latest.exists():  # kill as soon as the first checkpoint is complete
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its ranks: the session this test started
        process.wait(timeout=60)
    killed_at = int(latest.read_text())
    assert killed_at < STEPS, "the run finished before the kill: nothing was resumed"
    subprocess.run(sft_command(assets, killed), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=600)

    expected, resumed = losses(whole), losses(killed)
    assert sorted(resumed) == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    for step in range(killed_at + 1, STEPS + 1):
        assert abs(resumed[step] - expected[step]) <= 1e-6, f"step {step}: {resumed[step]} vs {expected[step]}"
    assert expected[STEPS] < expected[1], "training did not reduce the loss"

    # The best checkpoint (by validation loss) was exported to HF and loads with transformers.
    from transformers import AutoModelForCausalLM

    best = json.loads((whole / "hf_best.json").read_text())
    assert best["step"] % 4 == 0 and best["val_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(whole / "hf_best")
    assert model.config.architectures == ["Qwen2ForCausalLM"]


def run_main_sft(*overrides):
    return subprocess.run(
        [PYTHON, "-m", "harness.main_sft", *overrides], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )


def test_config_typo_names_the_closest_key(assets, tmp_path):
    result = run_main_sft(f"model.partial_pretrain={assets / 'model'}", "data.train_files=x.parquet", "optim.warmup_step_ratio=0.1")
    assert result.returncode == 2
    assert "unknown key 'optim.warmup_step_ratio'; did you mean 'optim.warmup_steps_ratio'?" in result.stderr


def test_bad_data_is_refused_before_any_compute(assets, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["How many a in aab?", "How many b in bb?"], "response": ["2", ""]}), bad)
    run_dir = tmp_path / "run"
    result = run_main_sft(f"model.partial_pretrain={assets / 'model'}", f"data.train_files={bad}", "data.train_batch_size=2",
                          f"trainer.default_local_dir={run_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{bad} row 1" in result.stderr and "response" in result.stderr
    assert not (run_dir / "checkpoints").exists()

    missing = tmp_path / "nowhere.parquet"
    result = run_main_sft(f"model.partial_pretrain={assets / 'model'}", f"data.train_files={missing}", f"trainer.default_local_dir={run_dir}")
    assert result.returncode == 2 and str(missing) in result.stderr
