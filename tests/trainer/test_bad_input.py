"""Bad input is refused before anything starts: one line naming the key or file, exit code 2, within
10 s (the bound the entry points promise; these take 1-3 s), before any process group or Ray worker,
and nothing in the output directory changes. Run against the real entry points (`main_ppo`,
`main_sft`, `harness.evaluate`, and `main_sft` under torchrun); more values and combinations are
checked in-process below, through the same config classes and pre-flight."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config.loader import ConfigError, load_config
from harness.config.rl import RLConfig
from harness.config.sft import SFTConfig
from harness.trainer import preflight
from tests.support.tiny_hf import make_tiny_hf_model
from tests.support.verl_data import char_count_files

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
BOUND_S = 10.0


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    char_count_files(root / "data")  # verl's layouts: sft/{train,test}.parquet, rl/{train,test}.parquet
    make_tiny_hf_model("qwen2", root / "model")  # 8 heads, 2 layers
    (root / "empty_dir").mkdir()
    (root / "not_parquet.parquet").write_text("this is not parquet\n")
    return root


def snapshot(directory: Path):
    """Every file (with a digest of its bytes) and directory under `directory`; None when absent."""
    if not directory.exists():
        return None
    return {str(path.relative_to(directory)): hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for path in sorted(directory.rglob("*"))}


def refused(command, run_dir: Path, env=None) -> str:
    """Runs `command`; asserts the refusal contract and returns the one line it printed."""
    before = snapshot(run_dir)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("ignored: ")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert elapsed < BOUND_S, f"refused after {elapsed:.1f} s"
    assert snapshot(run_dir) == before
    return lines[0]


def ppo(assets, run_dir, *extra):
    return [sys.executable, "-m", "harness.main_ppo", "--config", "configs/grpo_tiny_cpu.yaml",
            f"data.train_files={assets / 'data' / 'rl' / 'train.parquet'}", f"actor_rollout_ref.model.path={assets / 'model'}",
            f"trainer.default_local_dir={run_dir}", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
            "actor_rollout_ref.rollout.n=4", *extra]


def sft(assets, run_dir, *extra):
    return [sys.executable, "-m", "harness.main_sft", "--config", "configs/sft_tiny_cpu.yaml",
            f"data.train_files={assets / 'data' / 'sft' / 'train.parquet'}", f"model.partial_pretrain={assets / 'model'}",
            f"trainer.default_local_dir={run_dir}", "megatron.tensor_model_parallel_size=1", "data.train_batch_size=8",
            *extra]


def a_previous_run(run_dir: Path, latest: str, state: str = None) -> Path:
    """A run directory an earlier attempt left (metrics and a checkpoint step)."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "checkpoints" / "latest").write_text(latest)
    if state is not None:
        (run_dir / "checkpoints" / "global_step_2").mkdir()
        (run_dir / "checkpoints" / "global_step_2" / "trainer_state.json").write_text(state)
    return run_dir


# ---- main_ppo ----------------------------------------------------------------------------------------
PPO_CASES = {
    # paths
    "model": (["actor_rollout_ref.model.path=/nonexistent/model"],
              "error: actor_rollout_ref.model.path=/nonexistent/model: no such directory"),
    "model without config.json": (["actor_rollout_ref.model.path={assets}/empty_dir"], "no config.json"),
    "data": (["data.train_files=/nonexistent/train.parquet"],
             "error: data.train_files: /nonexistent/train.parquet: no such file"),
    "data not parquet": (["data.val_files={assets}/not_parquet.parquet"], "not_parquet.parquet: not a readable parquet file"),
    "reward file": (["custom_reward_function.path=./no_such_reward.py"],
                    "error: custom_reward_function.path='./no_such_reward.py': no such file"),
    "checkpoint": (["trainer.resume_mode=/nonexistent/global_step_3"],
                   "error: trainer.resume_mode=/nonexistent/global_step_3: no such checkpoint directory"),
    # values out of range
    "learning rate": (["actor_rollout_ref.actor.optim.lr=-1e-6"],
                      "config error: actor_rollout_ref.actor.optim: lr=-1e-06: must be > 0"),
    "temperature": (["actor_rollout_ref.rollout.temperature=-0.5"],
                    "actor_rollout_ref.rollout.temperature=-0.5: must be >= 0"),
    "top_p": (["actor_rollout_ref.rollout.top_p=1.5"], "actor_rollout_ref.rollout.top_p=1.5: must be within (0, 1]"),
    "clip ratio": (["actor_rollout_ref.actor.clip_ratio_c=0.5"],
                   "actor_rollout_ref.actor.clip_ratio_c=0.5: must be > 1"),
    "steps": (["trainer.total_training_steps=0"], "trainer.total_training_steps=0: must be positive"),
    # combinations that cannot work
    "groups need n >= 2": (["actor_rollout_ref.rollout.n=1"],
                           "error: algorithm.adv_estimator=grpo compares the samples of a prompt: "
                           "actor_rollout_ref.rollout.n=1 must be at least 2"),
    "batch vs data parallel": (["actor_rollout_ref.actor.ppo_mini_batch_size=3", "data.train_batch_size=3",
                                "actor_rollout_ref.rollout.n=3"],
                               "actor_rollout_ref.actor.ppo_mini_batch_size=3 x actor_rollout_ref.rollout.n=3 = 9 "
                               "sequences do not split over 2 data-parallel ranks"),
    "TP vs heads": (["actor_rollout_ref.actor.megatron.tensor_model_parallel_size=3", "trainer.n_gpus_per_node=3"],
                    "tensor_model_parallel_size=3 does not divide num_attention_heads=8"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("latest, state, message", [
    ("2", "{not json", "trainer_state.json: not valid JSON"),
    ("7", None, "checkpoints/latest: names step 7, but "),
])
def test_main_ppo_refuses_unreadable_resume_state(assets, tmp_path, latest, state, message):
    run_dir = a_previous_run(tmp_path / "run", latest, state)
    assert message in refused(ppo(assets, run_dir), run_dir)


# ---- main_sft ----------------------------------------------------------------------------------------
SFT_CASES = {
    "model": (["model.partial_pretrain=/nonexistent/model"],
              "error: model.partial_pretrain=/nonexistent/model: no such directory"),
    "data layout": (["data.train_files={assets}/data/rl/train.parquet"],
                    "rl/train.parquet: no 'messages' column, nor 'prompt' and 'response'"),
    "learning rate": (["optim.lr=-0.001"], "config error: optim.lr=-0.001: must be > 0"),
    "epochs": (["trainer.total_epochs=0"], "config error: trainer.total_epochs=0: must be >= 1"),
    "rows vs batch": (["data.train_batch_size=1000"], "data.train_files: 39 row(s), fewer than data.train_batch_size=1000"),
    "checkpoint": (["trainer.resume_mode={assets}/empty_dir"], "empty_dir: not a complete checkpoint"),
}


CASES = {**{("main_ppo", name): (ppo, *case) for name, case in PPO_CASES.items()},
         **{("main_sft", name): (sft, *case) for name, case in SFT_CASES.items()}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("entry, case", sorted(CASES))
def test_entry_point_refuses(assets, tmp_path, entry, case):
    command, extra, message = CASES[entry, case]
    line = refused(command(assets, tmp_path / "run", *[e.format(assets=assets) for e in extra]), tmp_path / "run")
    assert message in line


@pytest.mark.timeout(120)
def test_main_sft_refuses_tp_against_heads_and_a_damaged_latest(assets, tmp_path):
    env = {**ENV, "WORLD_SIZE": "3", "RANK": "0"}  # what torchrun --nproc_per_node 3 gives each rank
    line = refused(sft(assets, tmp_path / "run", "megatron.tensor_model_parallel_size=3"), tmp_path / "run", env=env)
    assert "megatron: tensor_model_parallel_size=3 does not divide num_attention_heads=8" in line
    run_dir = a_previous_run(tmp_path / "damaged", "half-written")
    assert "checkpoints/latest: holds 'half-written', not a step number" in refused(sft(assets, run_dir), run_dir)


@pytest.mark.timeout(120)
def test_under_torchrun_the_rank0_line_is_what_the_failure_summary_names(assets, tmp_path):
    """torchrun prints its own traceback and summary when a rank exits non-zero; the ranks write the
    one line to torchrun's error file, so the summary's root cause is rank 0 with that line (not 'To
    enable traceback see ...'), and rank 0 alone prints it before."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", *sft(assets, tmp_path / "run")[1:],
               "model.partial_pretrain=/nonexistent/model"]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    message = "error: model.partial_pretrain=/nonexistent/model: no such directory"
    assert result.returncode != 0 and not (tmp_path / "run").exists()
    printed = [line for line in result.stderr.splitlines() if line == message]
    root_cause = result.stderr.split("Root Cause (first observed failure):", 1)[-1]
    assert len(printed) == 1, result.stderr
    assert "rank      : 0 (local_rank: 0)" in root_cause and f"traceback : {message}" in root_cause, result.stderr
    assert "harness/" not in result.stderr  # no traceback through our code


# ---- harness.evaluate --------------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("arguments, message", [
    (["--checkpoint-path", "/nonexistent/ckpt"], "error: --checkpoint-path=/nonexistent/ckpt: no such directory"),
    (["--compare-with", "{assets}/empty_dir"], "error: --compare-with={assets}/empty_dir: no config.json"),
    (["--data", "/nonexistent/val.parquet"], "error: --data: /nonexistent/val.parquet: no such file"),
    (["--max-new-tokens", "0"], "error: --max-new-tokens=0: must be at least 1"),
])
def test_evaluate_refuses(assets, tmp_path, arguments, message):
    defaults = {"--checkpoint-path": str(assets / "model"), "--data": str(assets / "data" / "rl" / "test.parquet"),
                "--out": str(tmp_path / "evaluation")}
    given = dict(zip(arguments[::2], [a.format(assets=assets) for a in arguments[1::2]]))
    command = [sys.executable, "-m", "harness.evaluate", *[x for k, v in {**defaults, **given}.items() for x in (k, v)]]
    assert message.format(assets=assets) in refused(command, tmp_path / "evaluation")


# ---- more values and combinations, in-process (the same checks the entry points run) -------------------
RL_REQUIRED = ["data.train_files=x.parquet", "actor_rollout_ref.model.path=/m"]


@pytest.mark.parametrize("override, message", [
    ("critic.optim.lr=0", "critic.optim: lr=0.0: must be > 0"),
    ("actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=1.5", "lr_warmup_steps_ratio=1.5: must be within [0, 1]"),
    ("actor_rollout_ref.actor.optim.betas=[0.9,1.5]", "betas=[0.9, 1.5]: must be two values within [0, 1)"),
    ("actor_rollout_ref.rollout.top_k=0", "actor_rollout_ref.rollout.top_k=0: must be -1 (off) or at least 1"),
    ("actor_rollout_ref.rollout.val_kwargs.top_p=0", "actor_rollout_ref.rollout.val_kwargs.top_p=0.0: must be within (0, 1]"),
    ("actor_rollout_ref.actor.clip_ratio=0", "actor_rollout_ref.actor.clip_ratio=0.0: must be > 0"),
    ("actor_rollout_ref.actor.clip_ratio_high=-0.1", "clip_ratio_high=-0.1: must be >= 0"),
    ("actor_rollout_ref.actor.kl_loss_coef=-1", "actor_rollout_ref.actor.kl_loss_coef=-1.0: must be >= 0"),
    ("algorithm.kl_ctrl.kl_coef=-0.1", "algorithm.kl_ctrl.kl_coef=-0.1: must be >= 0"),
    ("algorithm.gamma=1.5", "algorithm.gamma=1.5: must be within [0, 1]"),
    ("trainer.total_epochs=0", "trainer.total_epochs=0: must be positive"),
    ("trainer.save_freq=-5", "trainer.save_freq=-5: must be -1"),
    ("trainer.critic_warmup=-1", "trainer.critic_warmup=-1: must be >= 0"),
    ("data.max_response_length=0", "data.max_response_length=0: must be positive"),
    ("actor_rollout_ref.actor.ppo_epochs=0", "ppo_epochs=0: must be positive"),
    ("trainer.critic_warmup=2", "trainer.critic_warmup=2 needs a critic"),
    ("actor_rollout_ref.actor.use_dynamic_bsz=true", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384 is "
                                                    "less than one sequence"),
    ("actor_rollout_ref.rollout.name=vllm", "vLLM is not used here"),
])
def test_rl_values_out_of_range_name_the_key(override, message):
    extra = ["data.max_prompt_length=16000"] if "dynamic" in override else []
    with pytest.raises(ConfigError) as error:
        load_config(RLConfig, None, RL_REQUIRED + extra + [override])
    assert message in str(error.value)


@pytest.mark.parametrize("override, message", [
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio=2.0: must be within [0, 1]"),
    ("optim.clip_grad=0", "optim.clip_grad=0.0: must be > 0"),
    ("optim.lr_warmup_steps=-3", "optim.lr_warmup_steps=-3"),
    ("trainer.total_training_steps=0", "trainer.total_training_steps=0: must be >= 1"),
    ("data.use_dynamic_bsz=true", "data.use_dynamic_bsz=true needs data.max_token_len_per_gpu"),
    ("data.max_token_len_per_gpu=0", "data.max_token_len_per_gpu=0: must be >= 1"),
])
def test_sft_values_out_of_range_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(SFTConfig, None, ["data.train_files=x", "model.partial_pretrain=/m", override])
    assert message in str(error.value)


def _rl(assets, run_dir, *overrides):
    return load_config(RLConfig, str(ROOT / "configs" / "grpo_tiny_cpu.yaml"), [
        f"data.train_files={assets / 'data' / 'rl' / 'train.parquet'}", f"actor_rollout_ref.model.path={assets / 'model'}",
        f"trainer.default_local_dir={run_dir}", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.rollout.n=4", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.adv_estimator=rloo", "actor_rollout_ref.rollout.n=1"], "adv_estimator=rloo compares the samples"),
    (["actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=8", "trainer.n_gpus_per_node=8"],
     "pipeline_model_parallel_size=8 is larger than num_hidden_layers=2"),
    (["algorithm.adv_estimator=gae", "critic.ppo_mini_batch_size=3", "data.train_batch_size=3",
      "actor_rollout_ref.actor.ppo_mini_batch_size=3", "actor_rollout_ref.rollout.n=1"],
     "sequences do not split over 2 data-parallel ranks"),
    (["algorithm.adv_estimator=gae", "critic.model.path=/nonexistent/critic"], "critic.model.path=/nonexistent/critic: no such"),
    (["custom_reward_function.path=tests/trainer/ppo_hooks.py", "custom_reward_function.name=no_such_scorer"],
     "custom_reward_function.name='no_such_scorer': is not defined in tests/trainer/ppo_hooks.py"),
    (["algorithm.adv_estimator=grpoo"], r"unknown advantage estimator \(algorithm.adv_estimator\) 'grpoo'"),
    (["reward_model.enable=true", "reward_model.model.path=/nonexistent/rm"], "reward_model.model.path=/nonexistent/rm"),
])
def test_rl_preflight_combinations(assets, tmp_path, overrides, message):
    with pytest.raises(preflight.PreflightError, match=message):
        preflight.check_rl(_rl(assets, tmp_path / "run", *overrides))


@pytest.mark.parametrize("state, message", [
    ('{"step": 2}', "trainer_state.json: missing prompt_order, kl_coef, nonfinite_steps"),
    (json.dumps({"step": 2, "prompt_order": {}, "kl_coef": 0.0, "nonfinite_steps": 0}),
     "global_step_2/actor: not a complete checkpoint"),
])
def test_rl_preflight_resume_state(assets, tmp_path, state, message):
    run_dir = a_previous_run(tmp_path / "run", "2", state)
    with pytest.raises(preflight.PreflightError, match=message):
        preflight.check_rl(_rl(assets, run_dir))


def test_a_good_run_passes_the_preflight(assets, tmp_path):
    preflight.check_rl(_rl(assets, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(120)
def test_preflight_flag_checks_and_exits(assets, tmp_path):
    """`--preflight` runs the same checks alone (for a launcher, before it spawns ranks): exit 0 and
    nothing written when the run would start, the same one-line refusal when it would not."""
    run_dir = tmp_path / "run"
    ppo_check = subprocess.run(ppo(assets, run_dir, "--preflight", "actor_rollout_ref.actor.fsdp_config.param_offload=True"),
                               cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    sft_check = subprocess.run(sft(assets, run_dir, "--preflight"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                               timeout=120)
    assert ppo_check.returncode == 0 and sft_check.returncode == 0, ppo_check.stderr[-3000:] + sft_check.stderr[-3000:]
    assert ppo_check.stderr.startswith("ignored: actor_rollout_ref.actor.fsdp_config.param_offload=True: an FSDP engine")
    assert not run_dir.exists()
    assert "no such directory" in refused(sft(assets, run_dir, "--preflight", "model.partial_pretrain=/nonexistent"),
                                          run_dir)
