"""main_sft and main_ppo ask the planner first: on CUDA a config that cannot fit on the visible GPUs
is refused with the planner's explanation (exit 2) before any process group or model exists;
trainer.skip_memory_check=true starts it anyway; on CPU the plan is only shown. The GPUs are
substituted in-process (8 x H100 80GB), the planner and the entry points are the real ones."""
import json
import time

import pytest
import torch

from harness import main_ppo, main_sft
from harness.parallel import platform
from harness.planning.catalog import KNOWN_MODELS
from tests.planning.support import REPO

EIGHT_H100 = [("NVIDIA H100 80GB HBM3", 85520809984)] * 8


class Started(Exception):
    """Raised by the substituted trainer: the run got past the memory check."""


@pytest.fixture
def qwen32b(tmp_path):
    """A model directory the pre-flight accepts (config.json, a weights file, a tokenizer file): the
    memory check reads only config.json."""
    model = tmp_path / "qwen32b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(KNOWN_MODELS["Qwen2.5-32B"]))
    (model / "model.safetensors").write_bytes(b"")
    (model / "tokenizer.json").write_text("{}")
    return str(model)


@pytest.fixture
def data(tmp_path):
    """SFT and RL parquet files with enough rows for the 32B configs' batch sizes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 512
    sft, rl = tmp_path / "sft.parquet", tmp_path / "rl.parquet"
    pq.write_table(pa.table({"prompt": ["2+2?"] * rows, "response": ["4"] * rows}), sft)
    pq.write_table(pa.table({"data_source": ["x"] * rows, "prompt": [[{"role": "user", "content": "2+2?"}]] * rows,
                             "reward_model": [{"ground_truth": "4", "style": "rule"}] * rows}), rl)
    return {"sft": str(sft), "rl": str(rl)}


@pytest.fixture
def gpus(monkeypatch):
    monkeypatch.setattr(platform, "visible_gpus", lambda: EIGHT_H100)
    monkeypatch.setattr(platform, "has_transformer_engine", lambda: True)


def _never_started(monkeypatch, module, name):
    def refuse(*_, **__):
        raise Started(name)

    monkeypatch.setattr(module, name, refuse)


def _sft_args(model, data, *extra):
    return ["--config", str(REPO / "configs" / "sft_qwen2.5_32b.yaml"), f"model.partial_pretrain={model}",
            f"data.train_files={data['sft']}", "data.val_files=null", "megatron.tensor_model_parallel_size=1",
            "megatron.pipeline_model_parallel_size=1", "megatron.sequence_parallel=false", *extra]


def _ppo_args(model, data, *extra):
    return ["--config", str(REPO / "configs" / "grpo_qwen2.5_32b.yaml"), f"actor_rollout_ref.model.path={model}",
            f"data.train_files={data['rl']}", "data.val_files=null", "actor_rollout_ref.rollout.name=embedded",
            "trainer.nnodes=1",
            "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=1",
            "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=1",
            "actor_rollout_ref.actor.megatron.sequence_parallel=false", *extra]


@pytest.mark.parametrize("entry", ["sft", "ppo"])
def test_oversized_config_refused_before_anything_starts(monkeypatch, capsys, gpus, qwen32b, data, entry):
    import harness.trainer.ppo
    import harness.trainer.sft

    monkeypatch.setenv("WORLD_SIZE", "8")
    _never_started(monkeypatch, harness.trainer.sft, "run_sft")
    _never_started(monkeypatch, harness.trainer.ppo, "run_ppo")
    main, args = (main_sft.main, _sft_args(qwen32b, data)) if entry == "sft" else (main_ppo.main, _ppo_args(qwen32b, data))
    started = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2
    assert not torch.distributed.is_initialized()
    line = next(line for line in err.splitlines() if line.startswith("error: memory check"))
    assert "> 79.6 GB" in line and ("at TP=1 PP=1" in line or "at actor TP=1 PP=1" in line), line
    assert ("model grads 122.1 GB" if entry == "sft" else "actor grads 122.1 GB") in line, line
    assert "trainer.skip_memory_check=true" in line
    print(f"refused in {seconds:.3f} s")  # reported, not asserted (timings are noisy here)


@pytest.mark.parametrize("entry", ["sft", "ppo"])
def test_skip_memory_check_starts_it_anyway(monkeypatch, capsys, gpus, qwen32b, data, entry):
    import harness.trainer.ppo
    import harness.trainer.sft

    monkeypatch.setenv("WORLD_SIZE", "8")
    _never_started(monkeypatch, harness.trainer.sft, "run_sft")
    _never_started(monkeypatch, harness.trainer.ppo, "run_ppo")
    main, args = (main_sft.main, _sft_args(qwen32b, data, "trainer.skip_memory_check=true")) if entry == "sft" else \
        (main_ppo.main, _ppo_args(qwen32b, data, "trainer.skip_memory_check=true"))
    with pytest.raises(Started):
        main(args)
    assert "memory check skipped" in capsys.readouterr().err


def test_a_config_that_fits_starts(monkeypatch, capsys, gpus, qwen32b, data):
    import harness.trainer.sft

    monkeypatch.setenv("WORLD_SIZE", "32")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    _never_started(monkeypatch, harness.trainer.sft, "run_sft")
    args = ["--config", str(REPO / "configs" / "sft_qwen2.5_32b.yaml"), f"model.partial_pretrain={qwen32b}",
            f"data.train_files={data['sft']}", "data.val_files=null"]
    with pytest.raises(Started):
        main_sft.main(args)
    assert "memory check: the fullest GPU needs" in capsys.readouterr().err


def test_cpu_only_shows_the_plan(monkeypatch, capsys, qwen32b, data):
    import harness.trainer.sft

    monkeypatch.setattr(platform, "visible_gpus", lambda: [])
    _never_started(monkeypatch, harness.trainer.sft, "run_sft")
    with pytest.raises(Started):  # even 32B at TP=1 is not refused on CPU
        main_sft.main(_sft_args(qwen32b, data))
    assert "memory plan (CPU, not enforced)" in capsys.readouterr().err
