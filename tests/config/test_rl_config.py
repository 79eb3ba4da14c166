"""`python -m harness.main_ppo` configuration: the shipped RL configs load, verl command lines carry
over, derived defaults follow the keys they come from, and bad values fail naming the key."""
import glob
import os

import pytest

from harness.config.loader import ConfigError, load_config
from harness.config.rl import RLConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRED = ["data.train_files=x.parquet", "actor_rollout_ref.model.path=/m"]
RL_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "grpo_*.yaml"))
                    + glob.glob(os.path.join(ROOT, "configs", "ppo_*.yaml")))


def load(config_file=None, *overrides):
    return load_config(RLConfig, config_file, list(REQUIRED) + list(overrides))


def config_path(name):
    return os.path.join(ROOT, "configs", name)


# ---- the shipped configs -----------------------------------------------------------------------
def test_all_rl_configs_are_listed():
    names = {os.path.basename(path) for path in RL_CONFIGS}
    assert names >= {"grpo_tiny_cpu.yaml", "grpo_qwen2.5_7b.yaml", "grpo_qwen2.5_32b.yaml", "ppo_tiny_cpu.yaml",
                     "ppo_qwen2.5_7b.yaml", "ppo_qwen2.5_32b.yaml"}
    assert len(RL_CONFIGS) == len(names) >= 6


@pytest.mark.parametrize("path", RL_CONFIGS, ids=os.path.basename)
def test_rl_config_loads_and_its_layouts_fit_the_world(path):
    config = load(path)
    name = os.path.basename(path)
    arr = config.actor_rollout_ref
    assert config.data.train_files == "x.parquet"
    assert arr.model.path == "/m" and arr.rollout.model_path == "/m" and config.critic.model.path == "/m"
    assert arr.rollout.response_length == config.data.max_response_length
    world = config.world_size
    assert world == config.trainer.nnodes * config.trainer.n_gpus_per_node
    for parallel in (arr.actor.megatron, config.critic.megatron):
        assert world % parallel.model_parallel_size == 0
    assert arr.ref.megatron == arr.actor.megatron
    assert config.data.train_batch_size % arr.actor.ppo_mini_batch_size == 0
    # every rank gets a whole number of micro-batches per optimizer step
    dp = arr.actor.megatron.data_parallel_size(world)
    sequences_per_rank = arr.actor.ppo_mini_batch_size * arr.rollout.n // dp
    assert arr.actor.ppo_mini_batch_size * arr.rollout.n % dp == 0
    assert sequences_per_rank % arr.actor.ppo_micro_batch_size_per_gpu == 0
    if name.startswith("ppo_"):
        assert config.algorithm.adv_estimator == "gae"
        assert config.critic.enable is True
        assert config.critic.megatron == arr.actor.megatron
        assert config.data.train_batch_size % config.critic.ppo_mini_batch_size == 0
    else:
        assert config.algorithm.adv_estimator == "grpo"
        assert config.critic.enable is False
        assert arr.rollout.n > 1
    if "_32b" in name:  # 4 nodes of 8: all training (colocated) or 3 training + 1 rollout node (split)
        split = config.trainer.placement == "split"
        assert world + (config.trainer.rollout_gpus_per_node if split else 0) == 32
        assert arr.actor.megatron.sequence_parallel
        assert config.ray_init.address == "auto"
    if "qwen2.5" in name:
        assert arr.model.dtype == "bf16"
        assert arr.rollout.name == "sglang"
        assert config.trainer.n_gpus_per_node == 8
        assert config.trainer.logger == ["console", "wandb"]
        assert arr.rollout.max_model_len == config.data.max_prompt_length + config.data.max_response_length
    if "tiny_cpu" in name:
        assert arr.rollout.name == "embedded" and world == 2


def test_grpo_qwen2_5_7b_settings():
    config = load(config_path("grpo_qwen2.5_7b.yaml"))
    arr = config.actor_rollout_ref
    # The planner's layout for 8 x 80 GB (configs/grpo_qwen2.5_7b.yaml says which command).
    assert (arr.actor.megatron.tensor_model_parallel_size, arr.actor.megatron.pipeline_model_parallel_size) == (1, 4)
    assert arr.actor.megatron.data_parallel_size(config.world_size) == 2
    assert (arr.rollout.tensor_model_parallel_size, arr.rollout.num_servers) == (4, 2)
    assert arr.rollout.weight_transport == "tensor"
    assert (arr.actor.use_kl_loss, arr.actor.kl_loss_coef, arr.actor.kl_loss_type) == (True, 0.001, "low_var_kl")
    assert config.uses_reference
    assert arr.actor.optim.lr == 1e-6 and arr.actor.entropy_coeff == 0.0
    assert (config.data.max_prompt_length, config.data.max_response_length) == (512, 1024)
    assert config.trainer.total_epochs == 15


def test_32b_layouts():
    # The planner's layouts for 4 x 8 x 80 GB (each config says which command).
    for name, layout in (("grpo_qwen2.5_32b.yaml", (8, 4, 1)), ("ppo_qwen2.5_32b.yaml", (8, 4, 1)),
                         ("grpo_qwen2.5_32b_split.yaml", (2, 4, 3))):
        config = load(config_path(name))
        actor = config.actor_rollout_ref.actor.megatron
        assert (actor.tensor_model_parallel_size, actor.pipeline_model_parallel_size,
                actor.data_parallel_size(config.world_size)) == layout, name
        assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == 8
        assert config.data.max_response_length == 2048


def test_ppo_tiny_cpu_settings():
    config = load(config_path("ppo_tiny_cpu.yaml"))
    assert (config.algorithm.gamma, config.algorithm.lam) == (1.0, 0.95)
    assert config.critic.optim.lr == 1e-3
    assert config.critic.megatron.tensor_model_parallel_size == 1
    assert config.trainer.total_training_steps == 20


def test_ppo_critics_start_from_the_actor():
    for name in ("ppo_qwen2.5_7b.yaml", "ppo_qwen2.5_32b.yaml"):
        config = load(config_path(name))
        assert config.critic.model.path == config.actor_rollout_ref.model.path == "/m"
        assert config.critic.optim.lr == 1e-5
        assert config.critic.megatron == config.actor_rollout_ref.actor.megatron
        assert not config.uses_reference  # no KL: no reference model


def test_config_file_then_command_line():
    config = load(config_path("grpo_qwen2.5_7b.yaml"), "actor_rollout_ref.rollout.n=5", "trainer.nnodes=2")
    assert config.actor_rollout_ref.rollout.n == 5 and config.world_size == 16


# ---- verl command lines ------------------------------------------------------------------------
VERL_GRPO = [
    "algorithm.adv_estimator=grpo",
    "data.train_files=gsm8k/train.parquet",
    "data.val_files=gsm8k/test.parquet",
    "data.train_batch_size=1024",
    "data.max_prompt_length=512",
    "data.max_response_length=1024",
    "data.filter_overlong_prompts=True",
    "actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct",
    "actor_rollout_ref.actor.optim.lr=1e-6",
    "actor_rollout_ref.actor.ppo_mini_batch_size=256",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
    "actor_rollout_ref.actor.use_kl_loss=True",
    "actor_rollout_ref.actor.kl_loss_coef=0.001",
    "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
    "actor_rollout_ref.actor.entropy_coeff=0",
    "actor_rollout_ref.rollout.name=sglang",
    "actor_rollout_ref.rollout.n=5",
    "actor_rollout_ref.rollout.temperature=1.0",
    "actor_rollout_ref.rollout.top_p=1.0",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
    "algorithm.use_kl_in_reward=False",
    "trainer.logger=[console,wandb]",
    "trainer.project_name=p",
    "trainer.experiment_name=e",
    "trainer.n_gpus_per_node=8",
    "trainer.nnodes=1",
    "trainer.save_freq=20",
    "trainer.test_freq=5",
    "trainer.total_epochs=15",
    "trainer.resume_mode=auto",
]
REF_TP2 = ["actor_rollout_ref.ref.megatron.tensor_model_parallel_size=2"]
VERL_PPO_EXTRA = [
    "algorithm.adv_estimator=gae",
    "critic.optim.lr=1e-5",
    "critic.model.path=Qwen/Qwen2.5-7B-Instruct",
    "critic.ppo_micro_batch_size_per_gpu=8",
    "critic.megatron.tensor_model_parallel_size=2",
    "reward_model.enable=False",
    "actor_rollout_ref.rollout.n=1",
    "actor_rollout_ref.actor.use_kl_loss=False",
]


def check_verl_grpo(config):
    data, arr, trainer = config.data, config.actor_rollout_ref, config.trainer
    assert config.algorithm.adv_estimator == "grpo" and config.algorithm.use_kl_in_reward is False
    assert (data.train_files, data.val_files) == ("gsm8k/train.parquet", "gsm8k/test.parquet")
    assert (data.train_batch_size, data.max_prompt_length, data.max_response_length) == (1024, 512, 1024)
    assert data.filter_overlong_prompts is True
    assert arr.model.path == "Qwen/Qwen2.5-7B-Instruct"
    assert arr.actor.optim.lr == 1e-6 and isinstance(arr.actor.optim.lr, float)
    assert (arr.actor.ppo_mini_batch_size, arr.actor.ppo_micro_batch_size_per_gpu) == (256, 16)
    assert (arr.actor.use_kl_loss, arr.actor.kl_loss_coef, arr.actor.kl_loss_type) == (True, 0.001, "low_var_kl")
    assert arr.actor.entropy_coeff == 0.0 and isinstance(arr.actor.entropy_coeff, float)
    assert arr.ref.log_prob_micro_batch_size_per_gpu == 32
    rollout = arr.rollout
    assert (rollout.name, rollout.n, rollout.temperature, rollout.top_p) == ("sglang", 5, 1.0, 1.0)
    assert (rollout.tensor_model_parallel_size, rollout.gpu_memory_utilization) == (2, 0.6)
    assert rollout.model_path == "Qwen/Qwen2.5-7B-Instruct" and rollout.response_length == 1024
    assert arr.actor.megatron.tensor_model_parallel_size == 2
    assert arr.actor.megatron.data_parallel_size(config.world_size) == 4
    assert trainer.logger == ["console", "wandb"]
    assert (trainer.project_name, trainer.experiment_name) == ("p", "e")
    assert (trainer.nnodes, trainer.n_gpus_per_node, config.world_size) == (1, 8, 8)
    assert (trainer.save_freq, trainer.test_freq, trainer.total_epochs, trainer.resume_mode) == (20, 5, 15, "auto")
    assert config.critic.enable is False
    assert config.uses_reference


def test_verl_grpo_quickstart_command_line():
    config = load_config(RLConfig, None, VERL_GRPO)
    check_verl_grpo(config)
    # the reference layout follows the actor's (verl interpolates it the same way)
    assert config.actor_rollout_ref.ref.megatron == config.actor_rollout_ref.actor.megatron


def test_verl_grpo_command_line_with_ref_layout():
    check_verl_grpo(load_config(RLConfig, None, VERL_GRPO + REF_TP2))


def test_verl_ppo_command_line():
    config = load_config(RLConfig, None, VERL_GRPO + VERL_PPO_EXTRA)
    assert config.algorithm.adv_estimator == "gae"
    assert config.critic.enable is True  # follows the estimator
    assert config.critic.optim.lr == 1e-5
    assert config.critic.model.path == "Qwen/Qwen2.5-7B-Instruct"
    assert config.critic.ppo_micro_batch_size_per_gpu == 8
    assert config.critic.ppo_mini_batch_size == 256  # the actor's
    assert config.critic.megatron.tensor_model_parallel_size == 2
    assert config.reward_model.enable is False
    assert config.actor_rollout_ref.rollout.n == 1
    assert not config.uses_reference


def test_verl_list_and_plus_syntax():
    config = load(None, "+trainer.val_before_train=False", "data.train_files=[a.parquet,b.parquet]")
    assert list(config.data.train_files) == ["a.parquet", "b.parquet"]
    assert config.trainer.val_before_train is False


# ---- derived defaults --------------------------------------------------------------------------
def test_rollout_follows_model_and_data():
    config = load(None, "data.max_response_length=777", "actor_rollout_ref.rollout.response_length=5")
    assert config.actor_rollout_ref.rollout.model_path == "/m"
    assert config.actor_rollout_ref.rollout.response_length == 777  # data.max_response_length wins
    config = load(None, "actor_rollout_ref.rollout.model_path=/served")
    assert config.actor_rollout_ref.rollout.model_path == "/served"


@pytest.mark.parametrize("estimator, critic", [("gae", True), ("grpo", False), ("rloo", False),
                                               ("reinforce_plus_plus", False)])
def test_critic_follows_the_estimator(estimator, critic):
    assert load(None, f"algorithm.adv_estimator={estimator}").critic.enable is critic


def test_critic_enable_set_explicitly_wins():
    assert load(None, "algorithm.adv_estimator=gae", "critic.enable=False").critic.enable is False
    assert load(None, "algorithm.adv_estimator=grpo", "critic.enable=True").critic.enable is True


def test_critic_and_ref_sizes_default_to_the_actor():
    config = load(None, "algorithm.adv_estimator=gae", "data.train_batch_size=32",
                  "actor_rollout_ref.actor.ppo_mini_batch_size=16", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
                  "actor_rollout_ref.actor.ppo_epochs=2")
    critic = config.critic
    assert (critic.ppo_mini_batch_size, critic.ppo_micro_batch_size_per_gpu, critic.ppo_epochs) == (16, 4, 2)
    assert critic.model.path == "/m"
    assert config.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu == 4
    config = load(None, "algorithm.adv_estimator=gae", "critic.ppo_micro_batch_size_per_gpu=2",
                  "critic.ppo_epochs=3", "critic.model.path=/critic")
    assert (config.critic.ppo_micro_batch_size_per_gpu, config.critic.ppo_epochs) == (2, 3)
    assert config.critic.model.path == "/critic"


def test_uses_reference():
    assert not load().uses_reference
    assert load(None, "actor_rollout_ref.actor.use_kl_loss=true").uses_reference
    assert load(None, "algorithm.use_kl_in_reward=true").uses_reference


# ---- errors name the key -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["actor_rollout_ref.actor.ppo_mini_batch=4"],
         "unknown key 'actor_rollout_ref.actor.ppo_mini_batch'; "
         "did you mean 'actor_rollout_ref.actor.ppo_mini_batch_size'?"),
        (["critic.optim.learning_rate=1e-5"], "unknown key 'critic.optim.learning_rate'"),
        (["data.train_batch_size=10", "actor_rollout_ref.actor.ppo_mini_batch_size=4"],
         "data.train_batch_size=10 must be a multiple of actor_rollout_ref.actor.ppo_mini_batch_size=4"),
        (["algorithm.adv_estimator=gae", "data.train_batch_size=8", "critic.ppo_mini_batch_size=3"],
         "must be a multiple of critic.ppo_mini_batch_size=3"),
        (["trainer.nnodes=1", "trainer.n_gpus_per_node=6", "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4",
          "actor_rollout_ref.ref.megatron.tensor_model_parallel_size=4"],
         "actor_rollout_ref.actor.megatron: world size 6 is not divisible"),
        (["trainer.n_gpus_per_node=8", "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=3",
          "actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=3"],
         "actor_rollout_ref.actor.megatron: world size 8 is not divisible"),
        (["algorithm.adv_estimator=gae", "critic.megatron.tensor_model_parallel_size=3"],
         "critic.megatron: world size 2 is not divisible"),
        (["actor_rollout_ref.ref.megatron.tensor_model_parallel_size=2"],
         "actor_rollout_ref.ref.megatron must equal actor_rollout_ref.actor.megatron"),
        (["trainer.placement=spread"], "trainer.placement='spread'"),
        (["trainer.logger=[console,mlflow]"], "trainer.logger: unknown ['mlflow']"),
        (["trainer.device=tpu"], "trainer.device='tpu'"),
        (["trainer.nnodes=0"], "trainer.nnodes=0"),
        (["algorithm.filter_groups.max_num_gen_batches=0"], "algorithm.filter_groups.max_num_gen_batches"),
        (["reward_model.timeout_s=0"], "reward_model.timeout_s=0"),
        (["data.max_response_length=0"], "data.max_response_length=0"),
        (["actor_rollout_ref.rollout.name=vllm"], "actor_rollout_ref.rollout.name='vllm'"),
        (["actor_rollout_ref.rollout.weight_transport=nccl"], "actor_rollout_ref.rollout.weight_transport='nccl'"),
        (["actor_rollout_ref.rollout.n=0"], "actor_rollout_ref.rollout.n=0"),
        (["actor_rollout_ref.model.dtype=bf32"], "model.dtype='bf32'"),
        (["actor_rollout_ref.actor.optim.lr_scheduler=step"], "optim.lr_scheduler='step'"),
        (["actor_rollout_ref.actor.optim.lr=fast"], "key 'actor_rollout_ref.actor.optim.lr'"),
    ],
)
def test_bad_rl_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load(None, *overrides)
    assert message in str(error.value)


def test_missing_model_path():
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.path is required"):
        load_config(RLConfig, None, ["data.train_files=x.parquet"])


def test_missing_train_files():
    with pytest.raises(ConfigError, match="data.train_files"):
        load_config(RLConfig, None, ["actor_rollout_ref.model.path=/m"])


def test_bad_key_in_a_config_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("actor_rollout_ref:\n  rollout:\n    temprature: 0.7\n")
    with pytest.raises(ConfigError) as error:
        load(str(path))
    assert "unknown key 'actor_rollout_ref.rollout.temprature'" in str(error.value)
    assert "did you mean 'actor_rollout_ref.rollout.temperature'" in str(error.value)


# ---- sizes and nested layouts ---------------------------------------------------------------
def test_zero_mini_batch_names_the_key():
    with pytest.raises(ConfigError, match="actor_rollout_ref.actor.ppo_mini_batch_size"):
        load(None, "actor_rollout_ref.actor.ppo_mini_batch_size=0")


def test_zero_micro_batch_names_the_key():
    with pytest.raises(ConfigError, match="actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"):
        load(None, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=0")


def test_parallel_layout_error_names_the_block():
    with pytest.raises(ConfigError, match="actor_rollout_ref.actor.megatron"):
        load(None, "actor_rollout_ref.actor.megatron.sequence_parallel=true")
