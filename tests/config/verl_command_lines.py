"""verl's launch command lines, copied by hand (keys and values as the shell passes them, with the
scripts' default environment; $HOME is /home/user), with only what a user changes: the module
(`verl.trainer.main_ppo`, `recipe.*.main_*`, `verl.trainer.sft_trainer` / `fsdp_sft_trainer` ->
`harness.main_ppo` / `harness.main_sft`) and `rollout.name=vllm` -> `sglang`.

Sources (verl-project/verl at 1dda039, verl-project/verl-recipe at 48ea0a7):
  recipe/char_count/train_sft.sh (both backends) and train_grpo.sh
  examples/sft/gsm8k/run_{deepseek_coder_6_7b,gemma_2b,gemma_7b,qwen2_5_0_5b,qwen3_8b,seed_oss_36b}_fsdp.sh,
    run_qwen_megatron_fsdp.sh (the dense-model ones; the MoE / MTP / automodel / megatron-lite ones
    need engines and architectures not built here)
  recipe/retool/run_qwen2-32b_sft.sh (the older fsdp_sft_trainer)
  examples/ppo_trainer/run_qwen3_8b_{fsdp,megatron}.sh, examples/grpo_trainer/run_qwen3_8b_{fsdp,megatron}.sh,
    run_qwen2_5_32b_fsdp.sh, examples/rloo_trainer/run_qwen3_8b_fsdp.sh,
    examples/reinforce_plus_plus_trainer/run_qwen3_8b_fsdp.sh,
    examples/remax_trainer/run_qwen3_8b_fsdp.sh, run_qwen2.5_math_7b_sync_fsdp.sh
  recipe/dapo/run_dapo_qwen2.5_32b.sh and test_dapo_7b_math_megatron.sh, recipe/prime/run_prime_qwen.sh

`python -m tests.config.verl_command_lines` prints how many of their keys the config loader accepts
(each key alone on top of the required ones), with whatever `harness` is importable.
"""
import shlex

SFT_REQUIRED = ["data.train_files=/home/user/data/train.parquet", "model.partial_pretrain=/home/user/models/m"]
RL_REQUIRED = ["data.train_files=/home/user/data/train.parquet", "actor_rollout_ref.model.path=/home/user/models/m"]

_CHAR_COUNT_SFT = """
    data.train_files=/home/user/data/char_count/sft/train.parquet data.train_batch_size=64
    data.val_files=/home/user/data/char_count/sft/test.parquet data.max_length=256 data.pad_mode=no_padding
    data.truncation=error data.use_dynamic_bsz=True data.max_token_len_per_gpu=1792 data.messages_key=messages
    model.path=HuggingFaceTB/SmolLM2-135M-Instruct model.use_remove_padding=True
    {engine}
    trainer.test_freq=-1 trainer.save_freq=70 trainer.logger=['console'] trainer.project_name=char_count-sft
    trainer.experiment_name=char_count-sft-SmolLM2-135M-Instruct-{backend}
    trainer.total_epochs=1 trainer.default_local_dir=/home/user/experiments/char_count/models/sft/{backend}
    trainer.resume_mode=auto trainer.max_ckpt_to_keep=5 checkpoint.save_contents=[model,optimizer,extra]
"""
_FSDP_ENGINE = """
    engine=fsdp optim=fsdp optim.lr=2e-5 optim.lr_warmup_steps_ratio=0.01 optim.weight_decay=0.1
    optim.betas="[0.9,0.95]" optim.clip_grad=1.0 optim.min_lr_ratio=0.1 optim.warmup_style=cosine
    engine.ulysses_sequence_parallel_size=1 engine.strategy=fsdp2 engine.fsdp_size=1
"""
_MEGATRON_ENGINE = """
    engine=megatron optim=megatron optim.lr=2e-5 optim.lr_warmup_steps_ratio=0.01 optim.weight_decay=0.1
    optim.betas="[0.9,0.95]" optim.clip_grad=1.0 optim.lr_warmup_init=0 optim.lr_decay_style=cosine optim.min_lr=2e-6
    engine.tensor_model_parallel_size=1 engine.pipeline_model_parallel_size=1
    engine.virtual_pipeline_model_parallel_size=null engine.context_parallel_size=1 engine.use_mbridge=False
"""
_GSM8K_SFT = """
    data.train_files=/home/user/data/gsm8k/train.parquet data.val_files=/home/user/data/gsm8k/test.parquet
    data.messages_key=messages data.micro_batch_size_per_gpu=4 optim.lr=1e-4 engine=fsdp model.path={model}
    trainer.default_local_dir=/tmp/sft trainer.project_name=gsm8k-sft trainer.experiment_name=gsm8k-sft-{name}
    trainer.total_epochs={epochs} trainer.logger='["console","wandb"]'
"""

SFT_LINES = {
    "char_count/train_sft.sh (fsdp)": _CHAR_COUNT_SFT.format(engine=_FSDP_ENGINE, backend="fsdp"),
    "char_count/train_sft.sh (megatron)": _CHAR_COUNT_SFT.format(engine=_MEGATRON_ENGINE, backend="megatron"),
    "sft/gsm8k/run_deepseek_coder_6_7b_fsdp.sh": _GSM8K_SFT.format(
        model="deepseek-ai/deepseek-coder-6.7b-instruct", name="deepseek-coder-6.7b-instruct", epochs=4),
    "sft/gsm8k/run_gemma_2b_fsdp.sh": _GSM8K_SFT.format(model="google/gemma-2b-it", name="gemma-2b-it", epochs=2),
    "sft/gsm8k/run_gemma_7b_fsdp.sh": _GSM8K_SFT.format(model="google/gemma-1.1-7b-it", name="gemma-1.1-7b-it",
                                                        epochs=4),
    "sft/gsm8k/run_qwen2_5_0_5b_fsdp.sh": """
        data.train_files=/home/user/data/gsm8k/train.parquet data.val_files=/home/user/data/gsm8k/test.parquet
        data.messages_key=messages data.micro_batch_size_per_gpu=4 optim.lr=1e-4 engine=fsdp
        engine.ulysses_sequence_parallel_size=1 model.path=Qwen/Qwen2.5-0.5B-Instruct model.use_remove_padding=true
        trainer.default_local_dir=/tmp/sft trainer.project_name=gsm8k-sft trainer.experiment_name=gsm8k-sft-qwen2_5_0_5b
        trainer.logger='["console","wandb"]' trainer.total_epochs=1
    """,
    # USE_PEFT=1 is the script's default: LoRA, which is refused (see REFUSED).
    "sft/gsm8k/run_qwen3_8b_fsdp.sh": """
        data.train_files=/home/user/data/gsm8k/train.parquet data.val_files=/home/user/data/gsm8k/test.parquet
        data.micro_batch_size_per_gpu=64 data.messages_key=messages data.ignore_input_ids_mismatch=True optim.lr=1e-4
        engine=fsdp engine.ulysses_sequence_parallel_size=2 model.path=Qwen/Qwen3-8B model.use_remove_padding=true
        trainer.default_local_dir=/tmp/sft trainer.project_name=gsm8k-sft
        trainer.experiment_name=gsm8k-sft-qwen3-8b-instruct trainer.logger='["console","wandb"]' trainer.total_epochs=2
        model.lora_rank=32 model.lora_alpha=16 model.target_modules=all-linear
    """,
    "sft/gsm8k/run_seed_oss_36b_fsdp.sh": """
        data.train_files=/home/user/data/gsm8k/train.parquet data.val_files=/home/user/data/gsm8k/test.parquet
        data.micro_batch_size_per_gpu=4 optim.lr=1e-4 engine=fsdp engine.ulysses_sequence_parallel_size=2
        model.path=ByteDance-Seed/Seed-OSS-36B-Base model.use_remove_padding=true trainer.default_local_dir=/tmp/sft
        trainer.project_name=gsm8k-sft trainer.experiment_name=gsm8k-sft-seed-oss-36b trainer.logger=console
        trainer.total_training_steps=1
    """,
    "sft/gsm8k/run_qwen_megatron_fsdp.sh": """
        data.train_files=/home/user/data/gsm8k_sft/train.parquet data.val_files=/home/user/data/gsm8k_sft/test.parquet
        data.messages_key=messages data.train_batch_size=8 data.use_dynamic_bsz=True data.max_token_len_per_gpu=1024
        data.pad_mode=no_padding data.truncation=error
        model=hf_model model.path=Qwen/Qwen2.5-Math-7B model.trust_remote_code=True model.use_remove_padding=true
        optim=megatron optim.lr=1e-5 optim.lr_warmup_steps_ratio=0.2 optim.weight_decay=0.1 "optim.betas=[0.9,0.95]"
        optim.clip_grad=1.0 optim.lr_warmup_init=0 optim.lr_decay_style=cosine optim.min_lr=1e-6
        engine=megatron engine.tensor_model_parallel_size=4 engine.pipeline_model_parallel_size=1
        engine.expert_model_parallel_size=1 engine.use_mbridge=True engine.vanilla_mbridge=False
        engine.use_megatron_fsdp=True +engine.override_transformer_config.gradient_accumulation_fusion=False
        trainer.default_local_dir=/root/checkpoints/Qwen2.5-Math-7B trainer.project_name=gsm8k-sft
        trainer.experiment_name=SFT-qwen2.5-7b-mfsdp trainer.logger='["console","wandb","file"]' trainer.total_epochs=4
    """,
    "retool/run_qwen2-32b_sft.sh": """
        data.train_files=/work/dataset/wuxibin/ReTool-SFT/data/train-00000-of-00001.parquet
        data.val_files=/work/dataset/wuxibin/ReTool-SFT/data/train-00000-of-00001.parquet
        data.max_length=16384 data.train_batch_size=32 data.multiturn.enable=true data.multiturn.messages_key=messages
        data.multiturn.tools_key=tools data.micro_batch_size_per_gpu=4 model.partial_pretrain=/work/model/Qwen2.5-32B-Instruct
        model.strategy=fsdp trainer.default_local_dir=/work/checkpoint/multiturn-sft-qwen-2.5-32b-instruct
        trainer.project_name=wuxibin-multiturn-sft trainer.experiment_name=multiturn-sft-qwen-2.5-32b-instruct
        trainer.logger='["console","wandb"]' trainer.total_epochs=6 ulysses_sequence_parallel_size=4
        use_remove_padding=true
    """,
}

_GSM8K_MATH_DATA = """
    data.train_files="['/home/user/data/gsm8k/train.parquet', '/home/user/data/math/train.parquet']"
    data.val_files="['/home/user/data/gsm8k/test.parquet', '/home/user/data/math/test.parquet']"
    data.train_batch_size={batch} data.max_prompt_length=1024 data.max_response_length=2048
    data.filter_overlong_prompts=True data.truncation='error'
"""
_GSM8K_MATH = _GSM8K_MATH_DATA.format(batch=1024)
_DYNAMIC_ROLLOUT_REF = """
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=24576
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=24576
"""
_TRAINER_8 = """
    trainer.logger='["console","wandb"]' trainer.n_gpus_per_node=8 trainer.nnodes=1 trainer.save_freq=20
    trainer.test_freq=5
"""
_FSDP_ACTOR = """
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    actor_rollout_ref.actor.fsdp_config.param_offload=False actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
    actor_rollout_ref.ref.fsdp_config.param_offload=True
"""
_UV = '"ray_kwargs.ray_init.runtime_env.py_executable=uv -v run --frozen --all-packages --extra {0} --extra {1}"'


def _baseline(estimator: str, extra: str, lr: str, mini: int, n: int, epochs: int, project: str,
              experiment: str) -> str:
    """The shared shape of examples/{rloo,reinforce_plus_plus,remax}_trainer/run_qwen3_8b_fsdp.sh."""
    return f"""
        algorithm.adv_estimator={estimator} algorithm.use_kl_in_reward=True {extra} {_GSM8K_MATH}
        actor_rollout_ref.model.path=Qwen/Qwen3-8B actor_rollout_ref.model.use_remove_padding=True {_FSDP_ACTOR}
        actor_rollout_ref.actor.optim.lr={lr} actor_rollout_ref.actor.ppo_mini_batch_size={mini}
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
        actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.entropy_coeff=0
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.tensor_model_parallel_size=2
        actor_rollout_ref.rollout.gpu_memory_utilization=0.6 actor_rollout_ref.rollout.n={n} {_DYNAMIC_ROLLOUT_REF}
        trainer.balance_batch=True trainer.critic_warmup=0 trainer.project_name={project}
        trainer.experiment_name={experiment} trainer.total_epochs={epochs} {_TRAINER_8} {_UV.format("vllm", "fsdp")}
    """


_DAPO_SAMPLING = """
    actor_rollout_ref.rollout.temperature=1.0 actor_rollout_ref.rollout.top_p=1.0 actor_rollout_ref.rollout.top_k="-1"
    actor_rollout_ref.rollout.val_kwargs.temperature=1.0 actor_rollout_ref.rollout.val_kwargs.top_p=0.7
    actor_rollout_ref.rollout.val_kwargs.top_k=-1 actor_rollout_ref.rollout.val_kwargs.do_sample=True
    actor_rollout_ref.rollout.val_kwargs.n=1 actor_rollout_ref.rollout.name=sglang
"""
_DAPO_ALGORITHM = """
    data.prompt_key=prompt data.truncation='left' data.max_prompt_length=2048
    algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False algorithm.kl_ctrl.kl_coef=0.0
    actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.clip_ratio_c=10.0 actor_rollout_ref.rollout.n=16
    actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.optim.lr_warmup_steps=10
    actor_rollout_ref.actor.optim.weight_decay=0.1 actor_rollout_ref.actor.ppo_mini_batch_size=32
    actor_rollout_ref.actor.entropy_coeff=0 actor_rollout_ref.actor.loss_agg_mode=token-mean
    actor_rollout_ref.rollout.gpu_memory_utilization=0.80 actor_rollout_ref.rollout.tensor_model_parallel_size=4
    actor_rollout_ref.rollout.enable_chunked_prefill=True reward_model.reward_manager=dapo
    trainer.logger='["console","wandb"]' trainer.project_name=DAPO trainer.resume_mode=auto
"""

RL_LINES = {
    "char_count/train_grpo.sh": """
        algorithm.adv_estimator=grpo data.train_files=/home/user/data/char_count/rl/train.parquet
        data.val_files=/home/user/data/char_count/rl/test.parquet data.train_batch_size=128 data.max_prompt_length=128
        data.max_response_length=128 data.filter_overlong_prompts=False data.truncation='error'
        actor_rollout_ref.model.path=/home/user/experiments/char_count/models/sft/megatron/global_step_140/huggingface
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.actor.ppo_mini_batch_size=16 actor_rollout_ref.actor.use_dynamic_bsz=True
        actor_rollout_ref.actor.ppo_max_token_len_per_gpu=5000 actor_rollout_ref.actor.use_kl_loss=False
        actor_rollout_ref.actor.kl_loss_coef=0.0 actor_rollout_ref.actor.kl_loss_type=low_var_kl
        actor_rollout_ref.actor.entropy_coeff=0 actor_rollout_ref.model.enable_gradient_checkpointing=True
        actor_rollout_ref.actor.fsdp_config.param_offload=True actor_rollout_ref.actor.fsdp_config.optimizer_offload=True
        actor_rollout_ref.rollout.tensor_model_parallel_size=1 actor_rollout_ref.rollout.name=sglang
        actor_rollout_ref.rollout.gpu_memory_utilization=0.7 actor_rollout_ref.rollout.n=8
        actor_rollout_ref.rollout.enforce_eager=True actor_rollout_ref.ref.fsdp_config.param_offload=True
        algorithm.use_kl_in_reward=False trainer.critic_warmup=0 trainer.logger='["console","tensorboard"]'
        trainer.project_name='verl_example' trainer.experiment_name='smol135m_grpo-1128a1' trainer.val_before_train=True
        trainer.n_gpus_per_node=1 trainer.nnodes=1 trainer.save_freq=-1 trainer.test_freq=5 trainer.total_epochs=5
        trainer.use_legacy_worker_impl=disable custom_reward_function.path=./reward_function.py
        custom_reward_function.name=char_count_reward_function
    """,
    "ppo_trainer/run_qwen3_8b_fsdp.sh": f"""
        algorithm.adv_estimator=gae {_GSM8K_MATH}
        actor_rollout_ref.model.path=Qwen/Qwen3-8B actor_rollout_ref.model.use_remove_padding=True {_FSDP_ACTOR}
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=256
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
        actor_rollout_ref.actor.entropy_coeff=0 actor_rollout_ref.rollout.name=sglang
        actor_rollout_ref.rollout.tensor_model_parallel_size=2 actor_rollout_ref.rollout.gpu_memory_utilization=0.6
        actor_rollout_ref.rollout.n=1 {_DYNAMIC_ROLLOUT_REF}
        critic.model.path=Qwen/Qwen3-8B critic.model.use_remove_padding=True critic.model.enable_gradient_checkpointing=True
        critic.optim.lr=1e-5 critic.use_dynamic_bsz=True critic.ppo_max_token_len_per_gpu=24576
        critic.fsdp.param_offload=False critic.fsdp.optimizer_offload=False
        trainer.balance_batch=True trainer.critic_warmup=0 trainer.project_name=verl_ppo_gsm8k_math
        trainer.experiment_name=qwen3_8b_ppo_sglang_fsdp_20260822_1200 trainer.total_epochs=15 {_TRAINER_8}
        {_UV.format("sglang", "fsdp")}
    """,
    "ppo_trainer/run_qwen3_8b_megatron.sh": f"""
        algorithm.adv_estimator=gae {_GSM8K_MATH}
        actor_rollout_ref.model.path=Qwen/Qwen3-8B actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=256
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
        actor_rollout_ref.actor.entropy_coeff=0 actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2
        actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.tensor_model_parallel_size=2
        actor_rollout_ref.rollout.gpu_memory_utilization=0.6 actor_rollout_ref.rollout.n=1 {_DYNAMIC_ROLLOUT_REF}
        actor_rollout_ref.ref.megatron.tensor_model_parallel_size=2 actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2
        critic.model.path=Qwen/Qwen3-8B critic.model.use_remove_padding=True critic.optim.lr=1e-5
        critic.use_dynamic_bsz=True critic.ppo_max_token_len_per_gpu=24576
        critic.megatron.tensor_model_parallel_size=2 critic.megatron.pipeline_model_parallel_size=2
        trainer.balance_batch=True trainer.critic_warmup=0 trainer.project_name=verl_ppo_gsm8k_math
        trainer.experiment_name=qwen3_8b_vllm_megatron trainer.total_epochs=15 {_TRAINER_8} model_engine=megatron
        {_UV.format("vllm", "megatron")}
    """,
    "grpo_trainer/run_qwen3_8b_fsdp.sh": f"""
        algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False {_GSM8K_MATH}
        actor_rollout_ref.model.path=Qwen/Qwen3-8B actor_rollout_ref.model.use_remove_padding=True {_FSDP_ACTOR}
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=256
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
        actor_rollout_ref.actor.use_kl_loss=True actor_rollout_ref.actor.kl_loss_coef=0.001
        actor_rollout_ref.actor.kl_loss_type=low_var_kl actor_rollout_ref.actor.entropy_coeff=0
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.tensor_model_parallel_size=2
        actor_rollout_ref.rollout.gpu_memory_utilization=0.6 actor_rollout_ref.rollout.n=5 {_DYNAMIC_ROLLOUT_REF}
        trainer.balance_batch=True trainer.project_name=verl_grpo_gsm8k_math
        trainer.experiment_name=qwen3_8b_grpo_sglang_fsdp_20260822_1200 trainer.total_epochs=15 {_TRAINER_8}
        {_UV.format("sglang", "fsdp")}
    """,
    "grpo_trainer/run_qwen3_8b_megatron.sh": f"""
        algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False {_GSM8K_MATH}
        actor_rollout_ref.model.path=Qwen/Qwen3-8B actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=256
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
        actor_rollout_ref.actor.use_kl_loss=True actor_rollout_ref.actor.kl_loss_coef=0.001
        actor_rollout_ref.actor.kl_loss_type=low_var_kl actor_rollout_ref.actor.entropy_coeff=0
        actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2
        actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.tensor_model_parallel_size=2
        actor_rollout_ref.rollout.gpu_memory_utilization=0.6 actor_rollout_ref.rollout.n=5 {_DYNAMIC_ROLLOUT_REF}
        actor_rollout_ref.ref.megatron.tensor_model_parallel_size=2 actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2
        trainer.balance_batch=True trainer.project_name=verl_grpo_gsm8k_math
        trainer.experiment_name=qwen3_8b_sglang_megatron trainer.total_epochs=15 {_TRAINER_8} model_engine=megatron
        {_UV.format("sglang", "megatron")}
    """,
    "grpo_trainer/run_qwen2_5_32b_fsdp.sh": f"""
        algorithm.adv_estimator=grpo data.train_files=/home/user/data/gsm8k/train.parquet
        data.val_files=/home/user/data/gsm8k/test.parquet data.train_batch_size=1024 data.max_prompt_length=1024
        data.max_response_length=1024 data.filter_overlong_prompts=True data.truncation='error'
        algorithm.use_kl_in_reward=False
        actor_rollout_ref.model.path=Qwen/Qwen2.5-32B actor_rollout_ref.model.use_remove_padding=False
        actor_rollout_ref.model.enable_gradient_checkpointing=True
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=128
        actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 actor_rollout_ref.actor.use_kl_loss=True
        actor_rollout_ref.actor.kl_loss_coef=0.001 actor_rollout_ref.actor.kl_loss_type=low_var_kl
        actor_rollout_ref.actor.entropy_coeff=0 actor_rollout_ref.actor.fsdp_config.param_offload=False
        actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2 actor_rollout_ref.rollout.tensor_model_parallel_size=8
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.gpu_memory_utilization=0.4
        actor_rollout_ref.rollout.enable_chunked_prefill=False actor_rollout_ref.rollout.enforce_eager=False
        actor_rollout_ref.rollout.free_cache_engine=True
        actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=4096 actor_rollout_ref.rollout.n=5
        actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2 actor_rollout_ref.ref.fsdp_config.param_offload=True
        trainer.critic_warmup=0 trainer.logger='["console","wandb"]' trainer.project_name=verl_grpo_example_geo3k
        trainer.experiment_name=glm41v_9b_function_rm trainer.n_gpus_per_node=8 trainer.nnodes=2 trainer.save_freq=20
        trainer.test_freq=5 trainer.total_epochs=15 {_UV.format("sglang", "fsdp")}
    """,
    "rloo_trainer/run_qwen3_8b_fsdp.sh": _baseline(
        "rloo", "algorithm.kl_penalty=kl algorithm.kl_ctrl.kl_coef=0.001", "1e-6", 256, 5, 15, "verl_rloo_gsm8k_math",
        "qwen3_8b_vllm_fsdp"),
    "reinforce_plus_plus_trainer/run_qwen3_8b_fsdp.sh": _baseline(
        "reinforce_plus_plus", "", "3e-6", 1024, 8, 15, "verl_reinforce_plus_plus_gsm8k_math", "qwen3_8b_vllm_fsdp"),
    "remax_trainer/run_qwen3_8b_fsdp.sh": _baseline(
        "remax", "algorithm.kl_penalty=kl algorithm.kl_ctrl.kl_coef=0.001", "1e-6", 256, 4, 10, "verl_remax_gsm8k_math",
        "qwen3_8b_vllm_fsdp"),
    "remax_trainer/run_qwen2.5_math_7b_sync_fsdp.sh": f"""
        algorithm.adv_estimator=remax algorithm.use_kl_in_reward=True algorithm.kl_penalty=kl algorithm.kl_ctrl.kl_coef=0.0
        {_GSM8K_MATH_DATA.format(batch=128)}
        actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-7B actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.model.enable_gradient_checkpointing=True
        actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=64
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
        actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.entropy_coeff=0
        actor_rollout_ref.actor.fsdp_config.param_offload=False actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
        actor_rollout_ref.actor.ulysses_sequence_parallel_size=2
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.tensor_model_parallel_size=2
        actor_rollout_ref.rollout.gpu_memory_utilization=0.7 actor_rollout_ref.rollout.n=4 {_DYNAMIC_ROLLOUT_REF}
        actor_rollout_ref.ref.fsdp_config.param_offload=False
        trainer.balance_batch=True trainer.critic_warmup=0 trainer.logger='["console","wandb"]'
        trainer.project_name=verl_remax_gsm8k_math trainer.experiment_name=qwen2.5_math_7b_vllm_fsdp_sync
        trainer.n_gpus_per_node=8 trainer.nnodes=1 trainer.save_freq=20 trainer.test_freq=10 trainer.total_epochs=10
        +ray_kwargs.ray_init.runtime_env.env_vars.TRANSFER_QUEUE_ENABLE=1 {_UV.format("vllm", "fsdp")}
    """,
    "dapo/run_dapo_qwen2.5_32b.sh": f"""
        data.train_files=/home/user/verl/data/dapo-math-17k.parquet data.val_files=/home/user/verl/data/aime-2024.parquet
        data.max_response_length=20480 data.gen_batch_size=1536 data.train_batch_size=512 {_DAPO_ALGORITHM}
        algorithm.filter_groups.enable=True algorithm.filter_groups.max_num_gen_batches=10
        algorithm.filter_groups.metric=acc actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True
        actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=22528
        actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=22528
        actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=22528
        actor_rollout_ref.model.path=/home/user/verl/models/Qwen2.5-32B
        actor_rollout_ref.model.enable_gradient_checkpointing=True
        actor_rollout_ref.actor.fsdp_config.param_offload=True actor_rollout_ref.actor.fsdp_config.optimizer_offload=True
        actor_rollout_ref.actor.grad_clip=1.0 actor_rollout_ref.actor.ulysses_sequence_parallel_size=8
        actor_rollout_ref.rollout.max_num_batched_tokens=22528 {_DAPO_SAMPLING}
        actor_rollout_ref.ref.fsdp_config.param_offload=True actor_rollout_ref.ref.ulysses_sequence_parallel_size=8
        actor_rollout_ref.actor.fsdp_config.fsdp_size=-1
        reward_model.overlong_buffer.enable=True reward_model.overlong_buffer.len=4096
        reward_model.overlong_buffer.penalty_factor=1.0 trainer.experiment_name=DAPO-Qwen2.5-32B
        trainer.n_gpus_per_node=8 trainer.nnodes=16 trainer.val_before_train=True trainer.test_freq=5 trainer.save_freq=5
        trainer.total_epochs=1 trainer.default_local_dir=/home/user/verl/ckpts/DAPO/DAPO-Qwen2.5-32B
    """,
    "dapo/test_dapo_7b_math_megatron.sh": f"""
        --config-path=config --config-name='ppo_megatron_trainer.yaml'
        data.train_files=/home/user/verl/data/dapo-math-17k.parquet data.val_files=/home/user/verl/data/aime-2024.parquet
        data.max_response_length=8192 data.train_batch_size=512 {_DAPO_ALGORITHM}
        actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4
        actor_rollout_ref.model.path=/home/user/verl/models/Qwen2.5-Math-7B
        actor_rollout_ref.actor.megatron.param_offload=True actor_rollout_ref.actor.megatron.optimizer_offload=True
        actor_rollout_ref.actor.megatron.grad_offload=True actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2
        actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4 actor_rollout_ref.actor.optim.clip_grad=1.0
        actor_rollout_ref.rollout.max_num_batched_tokens=10240 {_DAPO_SAMPLING}
        actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2 actor_rollout_ref.ref.megatron.tensor_model_parallel_size=4
        actor_rollout_ref.ref.megatron.param_offload=True
        +reward_model.reward_kwargs.overlong_buffer_cfg.enable=True +reward_model.reward_kwargs.overlong_buffer_cfg.len=4096
        +reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0
        +reward_model.reward_kwargs.overlong_buffer_cfg.log=False +reward_model.reward_kwargs.max_resp_len=8192
        trainer.experiment_name=DAPO-Qwen2.5-7b-MATH-megatron-0519a1 trainer.n_gpus_per_node=16 trainer.nnodes=4
        trainer.val_before_train=False trainer.test_freq=10 trainer.save_freq=10 trainer.total_epochs=10
        trainer.default_local_dir=/home/user/verl/ckpts/DAPO/DAPO-Qwen2.5-7b-MATH-megatron-0519a1
        trainer.log_val_generations=10
    """,
    "prime/run_prime_qwen.sh": """
        data.train_files="['/home/user/data/gsm8k/train.parquet', '/home/user/data/math/train.parquet']"
        data.val_files="['/home/user/data/gsm8k/test.parquet', '/home/user/data/math/test.parquet']"
        data.train_batch_size=64 data.val_batch_size=6312 data.max_prompt_length=1024 data.max_response_length=3072
        data.filter_overlong_prompts=True data.filter_accuracy=True data.accuracy_lower_bound=0.2
        data.accuracy_upper_bound=0.8 data.oversample_factor=4 actor_rollout_ref.model.path=PRIME-RL/Eurus-2-7B-SFT
        actor_rollout_ref.actor.optim.lr=5e-7 actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.actor.ppo_mini_batch_size=64 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1
        actor_rollout_ref.model.enable_gradient_checkpointing=True actor_rollout_ref.actor.fsdp_config.param_offload=True
        actor_rollout_ref.actor.fsdp_config.optimizer_offload=True actor_rollout_ref.actor.use_kl_loss=False
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32 actor_rollout_ref.rollout.tensor_model_parallel_size=1
        actor_rollout_ref.rollout.name=sglang actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.gpu_memory_utilization=0.6
        actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32 algorithm.adv_estimator=rloo
        algorithm.use_kl_in_reward=True algorithm.kl_penalty=kl algorithm.kl_ctrl.kl_coef=0.001
        reward_model.model.path=PRIME-RL/Eurus-2-7B-SFT reward_model.micro_batch_size_per_gpu=1
        reward_model.model.update=before reward_model.model.beta_train=0.05 reward_model.model.optim.lr=1e-6
        reward_model.model.optim.grad_clip=10.0 reward_model.model.input_tokenizer=null reward_model.mini_batch_size=64
        trainer.val_before_train=False trainer.logger='["console","wandb"]' trainer.project_name='prime_example'
        trainer.experiment_name='Eurus-2-7B-SFT-gsm8k' trainer.n_gpus_per_node=8 trainer.nnodes=1 trainer.save_freq=64
        trainer.test_freq=64 trainer.total_epochs=15
    """,
}

# Lines that ask for something not built here: refused (the whole run), in one line naming the key.
REFUSED = {
    "sft/gsm8k/run_qwen3_8b_fsdp.sh": "model.lora_rank=32: LoRA adapters are not supported",
    "prime/run_prime_qwen.sh": "data.filter_accuracy=True: PRIME's accuracy filter of prompts is not supported",
}


def arguments(line: str) -> list:
    """The argv of a command line as the shell would split and unquote it."""
    return shlex.split(line)


def keys_of(line: str) -> list:
    """(key, argv items) of each setting: `key=value` overrides, and Hydra's --config-path/--config-name."""
    items = []
    for argument in arguments(line):
        key = argument.split("=", 1)[0].lstrip("+")
        items.append((key, [argument]))
    return items


def verdict(schema, required, argument_items) -> str:
    """How the loader takes one key alone (on top of `required`): "accepted" (a meaning, an announced
    ignore, or only another key's constraint failing), "refused" (the value: an unsupported feature),
    "unknown", or "crash" (not a config error at all)."""
    from harness.config.loader import ConfigError, load_config, split_config_argument

    key = argument_items[0].split("=", 1)[0].lstrip("+")
    try:
        config_file, overrides = split_config_argument(list(required) + list(argument_items))
        load_config(schema, config_file, overrides)
    except ConfigError as error:
        message = str(error)
        if "unknown key" in message or "must look like key=value" in message:
            return "unknown"
        if message.startswith(f"command line: key '{key}'"):
            return "unknown"  # OmegaConf could not put the value there (a wrong type, a group choice)
        if message.startswith(f"command line: {key}="):
            return "refused"
        return "accepted"
    except Exception:  # noqa: BLE001 - counted: a crash instead of a config error
        return "crash"
    return "accepted"


def coverage() -> dict:
    """Per kind: distinct keys and script x key pairs, each with its verdict counts."""
    from harness.config.rl import RLConfig
    from harness.config.sft import SFTConfig

    result = {}
    for kind, schema, required, lines in (("sft", SFTConfig, SFT_REQUIRED, SFT_LINES),
                                          ("ppo", RLConfig, RL_REQUIRED, RL_LINES)):
        pairs, distinct = {}, {}
        for script, line in lines.items():
            for key, items in keys_of(line):
                pairs[(script, key)] = verdict(schema, required, items)
                distinct.setdefault(key, pairs[(script, key)])
        result[kind] = {"pairs": pairs, "distinct": distinct}
    return result


def _counts(verdicts) -> str:
    values = list(verdicts.values())
    return ", ".join(f"{name} {values.count(name)}" for name in ("accepted", "refused", "unknown", "crash")) + \
        f" (of {len(values)})"


if __name__ == "__main__":
    report = coverage()
    for kind, parts in report.items():
        print(f"{kind}: distinct keys: {_counts(parts['distinct'])}; script x key pairs: {_counts(parts['pairs'])}")
    total = {k: v for parts in report.values() for k, v in parts["pairs"].items()}
    print(f"all: script x key pairs: {_counts(total)}; distinct keys: "
          f"{_counts({k: v for parts in report.values() for k, v in parts['distinct'].items()})}")
    for kind, parts in report.items():
        for key, value in sorted(parts["distinct"].items()):
            if value != "accepted":
                print(f"  {kind} {value}: {key}")
