"""`python -m harness.main_ppo` configuration: verl's key names (`algorithm.adv_estimator=grpo`,
`actor_rollout_ref.rollout.n=5`, `critic.optim.lr=...`), so verl command lines carry over.

Batch sizes mean what they mean in verl: `data.train_batch_size` and `*.ppo_mini_batch_size` count
prompts (each with `rollout.n` samples), `*_micro_batch_size_per_gpu` counts sequences on one rank.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from harness.config.parallel import ParallelConfig
from harness.config.rollout import RolloutConfig
from harness.config.sft import check_loggers

DTYPES = ("fp32", "bf16", "fp16")
CRITIC_ESTIMATORS = ("gae",)  # estimators that need values; a critic is built for them


def _require_positive(section: str, config, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if value is not None and value < 1:
            raise ValueError(f"{section}.{key}={value}: must be positive")


@dataclass
class RLDataConfig:
    train_files: Any = MISSING  # a parquet path or a list of them (verl RL layout)
    val_files: Any = None
    train_batch_size: int = 8  # prompts per step
    val_batch_size: Optional[int] = None  # prompts per validation generate call (all at once when null)
    max_prompt_length: int = 512
    max_response_length: int = 512
    filter_overlong_prompts: bool = True  # false: a prompt over max_prompt_length is an error naming it
    shuffle: bool = True
    seed: int = 1

    def __post_init__(self):
        _require_positive("data", self, "train_batch_size", "max_prompt_length", "max_response_length")


@dataclass
class RLOptimConfig:
    lr: float = 1e-6
    lr_warmup_steps_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    lr_scheduler: str = "constant"  # constant | cosine | linear
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 1.0

    def __post_init__(self):
        if self.lr_scheduler not in ("constant", "cosine", "linear"):
            raise ValueError(f"optim.lr_scheduler={self.lr_scheduler!r}: must be constant, cosine or linear")


@dataclass
class ModelPathConfig:
    path: Optional[str] = None  # an HF directory or a torch_dist checkpoint with HF side files
    dtype: str = "fp32"  # the trained copy's params dtype: fp32 | bf16 | fp16

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r}: choose one of {DTYPES}")


@dataclass
class PolicyLossConfig:
    loss_mode: str = "vanilla"  # vanilla | gspo | cispo | module:function


@dataclass
class ActorConfig:
    ppo_mini_batch_size: int = 8  # prompts per optimizer step
    ppo_micro_batch_size_per_gpu: int = 8  # sequences per forward/backward on one rank
    ppo_epochs: int = 1
    shuffle: bool = False  # reorder samples between PPO epochs
    clip_ratio: float = 0.2
    clip_ratio_low: Optional[float] = None
    clip_ratio_high: Optional[float] = None
    clip_ratio_c: float = 3.0
    loss_agg_mode: str = "token-mean"
    loss_scale_factor: Optional[int] = None  # seq-mean-token-sum-norm's constant (DrGRPO: max response length)
    policy_loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    megatron: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self):
        _require_positive("actor_rollout_ref.actor", self, "ppo_mini_batch_size", "ppo_micro_batch_size_per_gpu",
                          "ppo_epochs")


@dataclass
class RefConfig:
    log_prob_micro_batch_size_per_gpu: Optional[int] = None  # default: the actor's micro-batch size
    # null: the actor's layout (the reference lives in the actor's processes; a different one is refused)
    megatron: Optional[ParallelConfig] = None


@dataclass
class ActorRolloutRefConfig:
    model: ModelPathConfig = field(default_factory=ModelPathConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(name="sglang"))


@dataclass
class CriticConfig:
    enable: Optional[bool] = None  # null: on when the advantage estimator needs values (gae)
    model: ModelPathConfig = field(default_factory=ModelPathConfig)  # path null: the actor's model
    ppo_mini_batch_size: Optional[int] = None  # default: the actor's
    ppo_micro_batch_size_per_gpu: Optional[int] = None
    ppo_epochs: Optional[int] = None
    cliprange_value: float = 0.5
    loss_agg_mode: str = "token-mean"
    optim: RLOptimConfig = field(default_factory=lambda: RLOptimConfig(lr=1e-5))
    megatron: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self):
        _require_positive("critic", self, "ppo_mini_batch_size", "ppo_micro_batch_size_per_gpu", "ppo_epochs")


@dataclass
class OverlongBufferConfig:
    """DAPO's soft overlong punishment over the last `len` tokens of the response budget."""

    enable: bool = False
    len: int = 16
    penalty_factor: float = 1.0


@dataclass
class RewardModelConfig:
    enable: bool = False  # score with a Megatron reward model (a value-head model) instead of rules
    model: ModelPathConfig = field(default_factory=ModelPathConfig)
    micro_batch_size_per_gpu: int = 8
    megatron: ParallelConfig = field(default_factory=ParallelConfig)
    url: Optional[str] = None  # a remote HTTP reward service (POST {"items": [...]} -> {"scores": [...]})
    timeout_s: float = 30.0  # per sample (rule and custom scorers) or per request (remote)
    max_retries: int = 2  # remote requests
    num_workers: int = 2  # scorer processes
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ValueError(f"reward_model.timeout_s={self.timeout_s}: must be positive (every wait is bounded)")


@dataclass
class CustomRewardFunctionConfig:
    path: Optional[str] = None  # a .py file or an importable module
    name: str = "compute_score"


@dataclass
class KLControlConfig:
    type: str = "fixed"
    kl_coef: float = 0.001
    horizon: int = 10000
    target_kl: float = 0.1


@dataclass
class FilterGroupsConfig:
    """DAPO dynamic sampling: keep only groups whose rewards differ; generate more until the batch fills."""

    enable: bool = False
    metric: str = "score"  # score | reward (after the KL penalty)
    max_num_gen_batches: int = 4  # bound on the generation rounds per step (0: no bound is refused)

    def __post_init__(self):
        if self.max_num_gen_batches < 1:
            raise ValueError("algorithm.filter_groups.max_num_gen_batches must be >= 1 (every wait is bounded)")


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    gamma: float = 1.0
    lam: float = 1.0
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_penalty: str = "kl"
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    filter_groups: FilterGroupsConfig = field(default_factory=FilterGroupsConfig)
    # Train/rollout mismatch correction (verl: algorithm.rollout_correction.*).
    rollout_is: str = "tis"
    rollout_is_threshold: float = 2.0
    rollout_is_threshold_lower: Optional[float] = None


@dataclass
class RayInitConfig:
    address: Optional[str] = None  # an existing cluster ("auto", "ray://..."); null: a private local one
    num_cpus: Optional[int] = None
    object_store_memory_mb: int = 512


@dataclass
class RLTrainerConfig:
    project_name: str = "harness"
    experiment_name: str = "ppo"
    logger: List[str] = field(default_factory=lambda: ["console"])
    nnodes: int = 1
    n_gpus_per_node: int = 2  # ranks per node for the training workers (CPU processes without GPUs)
    device: str = "auto"  # auto | cuda | cpu
    placement: str = "colocate"  # colocate: rollout shares the training devices | split: its own
    rollout_gpus_per_node: int = 1  # split mode: devices of the rollout engine's own node
    total_epochs: int = 1
    total_training_steps: Optional[int] = None
    save_freq: int = -1
    test_freq: int = -1
    val_before_train: bool = True
    default_local_dir: str = "outputs/ppo"
    resume_mode: str = "auto"  # auto | disable | a checkpoint directory
    seed: int = 1
    export_hf: bool = True  # the final actor as an HF model in default_local_dir/hf_actor
    max_nan_steps: int = 3  # steps with a non-finite loss are skipped; this many in a row stop the run
    max_rollout_restarts: int = 2  # per generation call, after a rollout server died
    worker_timeout_s: float = 1800.0  # bound on one worker call (a training phase)
    skip_memory_check: bool = False  # start even when the planner says the config cannot fit the GPUs

    def __post_init__(self):
        check_loggers(self.logger)
        if self.placement not in ("colocate", "split"):
            raise ValueError(f"trainer.placement={self.placement!r}: must be colocate or split")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"trainer.device={self.device!r}: must be auto, cuda or cpu")
        _require_positive("trainer", self, "nnodes", "n_gpus_per_node", "total_epochs")


@dataclass
class RLConfig:
    data: RLDataConfig = field(default_factory=RLDataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    custom_reward_function: CustomRewardFunctionConfig = field(default_factory=CustomRewardFunctionConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: RLTrainerConfig = field(default_factory=RLTrainerConfig)
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)

    def __post_init__(self):
        """Cross-key checks and the defaults that follow from other keys."""
        arr = self.actor_rollout_ref
        if arr.model.path is None:
            raise ValueError("actor_rollout_ref.model.path is required")
        rollout, actor = arr.rollout, arr.actor
        rollout.model_path = rollout.model_path or arr.model.path
        rollout.response_length = self.data.max_response_length
        critic = self.critic
        if critic.enable is None:
            critic.enable = self.algorithm.adv_estimator in CRITIC_ESTIMATORS
        critic.model.path = critic.model.path or arr.model.path
        critic.ppo_mini_batch_size = critic.ppo_mini_batch_size or actor.ppo_mini_batch_size
        critic.ppo_micro_batch_size_per_gpu = critic.ppo_micro_batch_size_per_gpu or actor.ppo_micro_batch_size_per_gpu
        critic.ppo_epochs = critic.ppo_epochs or actor.ppo_epochs
        arr.ref.log_prob_micro_batch_size_per_gpu = (arr.ref.log_prob_micro_batch_size_per_gpu
                                                     or actor.ppo_micro_batch_size_per_gpu)
        if self.data.train_batch_size % actor.ppo_mini_batch_size:
            raise ValueError(f"data.train_batch_size={self.data.train_batch_size} must be a multiple of "
                             f"actor_rollout_ref.actor.ppo_mini_batch_size={actor.ppo_mini_batch_size}")
        if critic.enable and self.data.train_batch_size % critic.ppo_mini_batch_size:
            raise ValueError(f"data.train_batch_size={self.data.train_batch_size} must be a multiple of "
                             f"critic.ppo_mini_batch_size={critic.ppo_mini_batch_size}")
        arr.ref.megatron = arr.ref.megatron or actor.megatron
        if arr.ref.megatron != actor.megatron:
            raise ValueError("actor_rollout_ref.ref.megatron must equal actor_rollout_ref.actor.megatron: the "
                             "reference model lives in the actor's processes")
        world = self.trainer.nnodes * self.trainer.n_gpus_per_node
        for name, parallel in (("actor_rollout_ref.actor", actor.megatron), ("critic", critic.megatron)):
            try:
                parallel.data_parallel_size(world)
            except ValueError as error:
                raise ValueError(f"{name}.megatron: {error} (trainer.nnodes x trainer.n_gpus_per_node)") from None

    @property
    def world_size(self) -> int:
        return self.trainer.nnodes * self.trainer.n_gpus_per_node

    @property
    def uses_reference(self) -> bool:
        return self.actor_rollout_ref.actor.use_kl_loss or self.algorithm.use_kl_in_reward
