"""verl's recipes run as they are, at tiny size: its command lines (tests/config/verl_command_lines.py)
with the module name swapped, sizes shrunk and the embedded engine, on data written in verl's own
parquet layouts (with repeated rows), with its reward function file given by a relative path.

- char_count/train_sft.sh (Megatron backend) under torchrun: token-budget micro-batches, verl's
  optimizer names, every FSDP / engine key it cannot use announced;
- char_count/train_grpo.sh: GRPO with dynamic batch size, gradient checkpointing (full activation
  recompute), a custom reward file; the first step is exactly on-policy;
- ppo_trainer/run_qwen3_8b_fsdp.sh on gsm8k-layout files, with trainer.critic_warmup=1: the first
  step trains only the critic.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.verl_data import CHAR_COUNT_REWARD_FUNCTION, char_count_files, gsm8k_rl_rows, write

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("verl_recipes")
    subprocess.run([sys.executable, "tools/make_tiny_model.py", "--arch", "qwen2", "--out", str(root / "model"),
                    "--dtype", "float32"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    char_count_files(root / "char_count")
    for name in ("gsm8k", "math"):
        (root / name).mkdir()
        write(root / name / "train.parquet", gsm8k_rl_rows("train", 8, seed=len(name)))
        write(root / name / "test.parquet", gsm8k_rl_rows("test", 2, seed=len(name) + 1))
    (root / "reward_function.py").write_text(CHAR_COUNT_REWARD_FUNCTION)
    return root


def run(command, cwd, timeout=600):
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    return result


def steps(run_dir: Path) -> dict:
    with open(run_dir / "metrics.jsonl") as f:
        return {record["step"]: record for record in map(json.loads, f)}


def ignored(stderr: str) -> set:
    return {line.split("=", 1)[0].removeprefix("ignored: ") for line in stderr.splitlines()
            if line.startswith("ignored: ")}


@pytest.mark.timeout(400)
def test_char_count_sft_recipe_under_torchrun(assets, tmp_path):
    data, out = assets / "char_count" / "sft", tmp_path / "sft"
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=1",
                  "-m", "harness.main_sft",
                  f"data.train_files={data / 'train.parquet'}", "data.train_batch_size=8",  # 64
                  f"data.val_files={data / 'test.parquet'}", "data.max_length=256", "data.pad_mode=no_padding",
                  "data.truncation=error", "data.use_dynamic_bsz=True", "data.max_token_len_per_gpu=1792",
                  "data.messages_key=messages", f"model.path={assets / 'model'}", "model.use_remove_padding=True",
                  "engine=megatron", "optim=megatron", "optim.lr=2e-5", "optim.lr_warmup_steps_ratio=0.01",
                  "optim.weight_decay=0.1", "optim.betas=[0.9,0.95]", "optim.clip_grad=1.0", "optim.lr_warmup_init=0",
                  "optim.lr_decay_style=cosine", "optim.min_lr=2e-6", "engine.tensor_model_parallel_size=1",
                  "engine.pipeline_model_parallel_size=1", "engine.virtual_pipeline_model_parallel_size=null",
                  "engine.context_parallel_size=1", "engine.use_mbridge=False", "trainer.test_freq=-1",
                  "trainer.save_freq=70", "trainer.logger=[console]", "trainer.project_name=char_count-sft",
                  "trainer.experiment_name=char_count-sft-SmolLM2-135M-Instruct-megatron", "trainer.total_epochs=1",
                  f"trainer.default_local_dir={out}", "trainer.resume_mode=auto", "trainer.max_ckpt_to_keep=5",
                  "checkpoint.save_contents=[model,optimizer,extra]", "trainer.total_training_steps=2"], cwd=ROOT)
    assert {"engine", "optim", "optim.lr_warmup_init", "model.use_remove_padding", "data.pad_mode", "engine.use_mbridge",
            "trainer.max_ckpt_to_keep", "checkpoint.save_contents"} == ignored(result.stderr)
    assert "3 duplicate row(s) kept" in result.stderr
    logged = steps(out)
    assert sorted(logged) == [1, 2] and "val/loss" in logged[2]
    assert logged[1]["train/lr"] < 2e-5  # verl's cosine schedule with warmup, from lr 2e-5 down to min_lr 2e-6
    assert (out / "hf_best" / "config.json").is_file()


@pytest.mark.timeout(500)
def test_char_count_grpo_recipe(assets, tmp_path):
    data, out = assets / "char_count" / "rl", tmp_path / "grpo"
    result = run([sys.executable, "-m", "harness.main_ppo", "algorithm.adv_estimator=grpo",
                  f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'test.parquet'}",
                  "data.train_batch_size=8", "data.max_prompt_length=128", "data.max_response_length=16",  # 128, 128
                  "data.filter_overlong_prompts=False", "data.truncation=error",
                  f"actor_rollout_ref.model.path={assets / 'model'}", "actor_rollout_ref.actor.optim.lr=1e-6",
                  "actor_rollout_ref.model.use_remove_padding=True", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
                  "actor_rollout_ref.actor.use_dynamic_bsz=True",
                  "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=200",  # 5000: micro-batches of 2 sequences here
                  "actor_rollout_ref.actor.use_kl_loss=False", "actor_rollout_ref.actor.kl_loss_coef=0.0",
                  "actor_rollout_ref.actor.kl_loss_type=low_var_kl", "actor_rollout_ref.actor.entropy_coeff=0",
                  "actor_rollout_ref.model.enable_gradient_checkpointing=True",
                  "actor_rollout_ref.actor.fsdp_config.param_offload=True",
                  "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True",
                  "actor_rollout_ref.rollout.tensor_model_parallel_size=1", "actor_rollout_ref.rollout.name=embedded",
                  "actor_rollout_ref.rollout.gpu_memory_utilization=0.7", "actor_rollout_ref.rollout.n=4",  # 8
                  "actor_rollout_ref.rollout.enforce_eager=True", "actor_rollout_ref.ref.fsdp_config.param_offload=True",
                  "algorithm.use_kl_in_reward=False", "trainer.critic_warmup=0",
                  'trainer.logger=["console","tensorboard"]', "trainer.project_name=verl_example",
                  "trainer.experiment_name=smol135m_grpo-1128a1", "trainer.val_before_train=True",
                  "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.save_freq=-1", "trainer.test_freq=5",
                  "trainer.total_epochs=5", "trainer.total_training_steps=1", f"trainer.default_local_dir={out}",
                  "trainer.use_legacy_worker_impl=disable", "custom_reward_function.path=./reward_function.py",
                  "custom_reward_function.name=char_count_reward_function",
                  "trainer.export_hf=false"], cwd=assets)  # not verl's: skips the final HF export, for time
    assert ignored(result.stderr) == {
        "actor_rollout_ref.model.use_remove_padding", "actor_rollout_ref.actor.fsdp_config.param_offload",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload", "actor_rollout_ref.ref.fsdp_config.param_offload",
        "trainer.use_legacy_worker_impl"}
    assert "duplicate row(s) kept" in result.stderr
    logged = steps(out)
    assert "val/accuracy" in logged[0] and "val/accuracy" in logged[1]
    # Token-budget micro-batches in the old log-probs and the update alike: the first ratio is exactly 1.
    assert logged[1]["actor/ppo_kl"] == 0.0 and logged[1]["actor/pg_clipfrac"] == 0.0
    assert logged[1]["batch/samples"] == 32


@pytest.mark.timeout(500)
def test_ppo_recipe_on_gsm8k_layout_with_critic_warmup(assets, tmp_path):
    out = tmp_path / "ppo"
    budget = 600  # 24576 in the recipe
    result = run([sys.executable, "-m", "harness.main_ppo", "algorithm.adv_estimator=gae",
                  f"data.train_files=['{assets / 'gsm8k/train.parquet'}', '{assets / 'math/train.parquet'}']",
                  f"data.val_files=['{assets / 'gsm8k/test.parquet'}', '{assets / 'math/test.parquet'}']",
                  "data.train_batch_size=4", "data.max_prompt_length=256", "data.max_response_length=16",
                  "data.filter_overlong_prompts=True", "data.truncation=error",
                  f"actor_rollout_ref.model.path={assets / 'model'}", "actor_rollout_ref.model.use_remove_padding=True",
                  "actor_rollout_ref.model.enable_gradient_checkpointing=True", "actor_rollout_ref.actor.optim.lr=1e-6",
                  "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.use_dynamic_bsz=True",
                  f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}", "actor_rollout_ref.actor.entropy_coeff=0",
                  "actor_rollout_ref.actor.fsdp_config.param_offload=False",
                  "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
                  "actor_rollout_ref.rollout.name=embedded", "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
                  "actor_rollout_ref.rollout.gpu_memory_utilization=0.6", "actor_rollout_ref.rollout.n=1",
                  "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
                  f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={budget}",
                  "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
                  f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={budget}",
                  "actor_rollout_ref.ref.fsdp_config.param_offload=True", f"critic.model.path={assets / 'model'}",
                  "critic.model.use_remove_padding=True", "critic.model.enable_gradient_checkpointing=True",
                  "critic.optim.lr=1e-5", "critic.use_dynamic_bsz=True", f"critic.ppo_max_token_len_per_gpu={budget}",
                  "critic.fsdp.param_offload=False", "critic.fsdp.optimizer_offload=False", "trainer.balance_batch=True",
                  "trainer.critic_warmup=1",  # 0 in the recipe
                  "trainer.logger=[console]", "trainer.project_name=verl_ppo_gsm8k_math",
                  "trainer.experiment_name=qwen3_8b_ppo", "trainer.n_gpus_per_node=1", "trainer.nnodes=1",
                  "trainer.save_freq=20", "trainer.test_freq=5", "trainer.total_epochs=15",
                  "trainer.total_training_steps=2", "trainer.val_before_train=False", f"trainer.default_local_dir={out}",
                  "ray_kwargs.ray_init.runtime_env.py_executable=null",
                  "trainer.export_hf=false"], cwd=ROOT)  # not verl's: skips the final HF export, for time
    assert "trainer.balance_batch" in ignored(result.stderr)
    logged = steps(out)
    # Step 1 trains the critic only; step 2 both, still on-policy (the actor did not move in step 1).
    assert "critic/vf_loss" in logged[1] and not any(key.startswith("actor/pg") for key in logged[1])
    assert "critic/vf_loss" in logged[2] and logged[2]["actor/ppo_kl"] == 0.0
    assert logged[2]["val-core/openai/gsm8k/reward/mean@1"] >= 0.0
