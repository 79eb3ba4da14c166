"""`python -m harness.main_ppo` configuration: verl's key names (`algorithm.adv_estimator=grpo`,
`actor_rollout_ref.rollout.n=5`, `critic.optim.lr=...`), so verl command lines carry over.

Batch sizes mean what they mean in verl: `data.train_batch_size` and `*.ppo_mini_batch_size` count
prompts (each with `rollout.n` samples), `*_micro_batch_size_per_gpu` counts sequences on one rank.
With `use_dynamic_bsz` a micro-batch holds as many sequences as fit `*_max_token_len_per_gpu` tokens
at the batch's padded length. verl's other keys are translated by `RLConfig.VERL_KEYS`
(harness/config/verl_keys.py).
"""
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

from omegaconf import MISSING

from harness.config import verl_keys
from harness.config.checks import check_frequency, check_optimizer, check_range
from harness.config.parallel import ParallelConfig
from harness.config.rollout import RolloutConfig
from harness.config.sft import check_loggers

DTYPES = ("fp32", "bf16", "fp16")
CRITIC_ESTIMATORS = ("gae",)  # estimators that need values; a critic is built for them
TRUNCATION = ("error", "left", "right", "middle")


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
    filter_overlong_prompts: bool = True  # true: a prompt over max_prompt_length is dropped (and counted)
    # Unfiltered over-long prompts: error (naming each) | left (keep the end) | right | middle (both ends).
    truncation: str = "error"
    shuffle: bool = True
    seed: int = 1

    def __post_init__(self):
        _require_positive("data", self, "train_batch_size", "val_batch_size", "max_prompt_length",
                          "max_response_length")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"data.truncation={self.truncation!r}: must be one of {', '.join(TRUNCATION)}")


@dataclass
class RLOptimConfig:
    lr: float = 1e-6
    lr_warmup_steps_ratio: float = 0.0
    lr_warmup_steps: int = -1  # steps of linear warmup; -1: lr_warmup_steps_ratio of the run
    min_lr_ratio: float = 0.0
    lr_scheduler: str = "constant"  # constant | cosine | linear
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 1.0

    def __post_init__(self):
        check_optimizer("", self, "lr_warmup_steps_ratio")
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
    use_dynamic_bsz: bool = False  # micro-batches by token budget instead of ppo_micro_batch_size_per_gpu
    ppo_max_token_len_per_gpu: int = 16384  # the budget: padded tokens of one micro-batch
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
        section = "actor_rollout_ref.actor"
        _require_positive(section, self, "ppo_mini_batch_size", "ppo_micro_batch_size_per_gpu", "ppo_epochs",
                          "ppo_max_token_len_per_gpu", "loss_scale_factor")
        check_range(f"{section}.clip_ratio", self.clip_ratio, 0, low_open=True)
        check_range(f"{section}.clip_ratio_low", self.clip_ratio_low, 0)
        check_range(f"{section}.clip_ratio_high", self.clip_ratio_high, 0)
        check_range(f"{section}.clip_ratio_c", self.clip_ratio_c, 1, low_open=True)  # dual-clip bound
        check_range(f"{section}.kl_loss_coef", self.kl_loss_coef, 0)


@dataclass
class RefConfig:
    log_prob_micro_batch_size_per_gpu: Optional[int] = None  # default: the actor's micro-batch size
    log_prob_use_dynamic_bsz: Optional[bool] = None  # default: the actor's use_dynamic_bsz
    log_prob_max_token_len_per_gpu: Optional[int] = None  # default: the actor's ppo_max_token_len_per_gpu
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
    use_dynamic_bsz: Optional[bool] = None  # default: the actor's
    ppo_max_token_len_per_gpu: Optional[int] = None  # default: the actor's
    forward_max_token_len_per_gpu: Optional[int] = None  # values pass; default: ppo_max_token_len_per_gpu
    ppo_epochs: Optional[int] = None
    cliprange_value: float = 0.5
    loss_agg_mode: str = "token-mean"
    optim: RLOptimConfig = field(default_factory=lambda: RLOptimConfig(lr=1e-5))
    megatron: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self):
        _require_positive("critic", self, "ppo_mini_batch_size", "ppo_micro_batch_size_per_gpu", "ppo_epochs",
                          "ppo_max_token_len_per_gpu", "forward_max_token_len_per_gpu")
        check_range("critic.cliprange_value", self.cliprange_value, 0, low_open=True)


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

    def __post_init__(self):
        check_range("algorithm.kl_ctrl.kl_coef", self.kl_coef, 0)
        check_range("algorithm.kl_ctrl.horizon", self.horizon, 1)
        check_range("algorithm.kl_ctrl.target_kl", self.target_kl, 0, low_open=True)


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

    def __post_init__(self):
        check_range("algorithm.gamma", self.gamma, 0, 1)
        check_range("algorithm.lam", self.lam, 0, 1)
        check_range("algorithm.rollout_is_threshold", self.rollout_is_threshold, 0, low_open=True)
        check_range("algorithm.rollout_is_threshold_lower", self.rollout_is_threshold_lower, 0, low_open=True)


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
    critic_warmup: int = 0  # steps at the start that train only the critic (the actor stays as it is)
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
        _require_positive("trainer", self, "nnodes", "n_gpus_per_node", "total_epochs", "total_training_steps",
                          "max_nan_steps")
        check_range("trainer.critic_warmup", self.critic_warmup, 0)
        check_range("trainer.worker_timeout_s", self.worker_timeout_s, 0, low_open=True)
        check_frequency("trainer.save_freq", self.save_freq)
        check_frequency("trainer.test_freq", self.test_freq)


@dataclass
class RLConfig:
    VERL_KEYS: ClassVar[dict] = verl_keys.RL_KEYS

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
        self._token_budget_defaults()
        if self.data.train_batch_size % actor.ppo_mini_batch_size:
            raise ValueError(f"data.train_batch_size={self.data.train_batch_size} must be a multiple of "
                             f"actor_rollout_ref.actor.ppo_mini_batch_size={actor.ppo_mini_batch_size}")
        if critic.enable and self.data.train_batch_size % critic.ppo_mini_batch_size:
            raise ValueError(f"data.train_batch_size={self.data.train_batch_size} must be a multiple of "
                             f"critic.ppo_mini_batch_size={critic.ppo_mini_batch_size}")
        arr.ref.megatron = arr.ref.megatron or actor.megatron
        if not arr.ref.megatron.same_layout(actor.megatron):
            raise ValueError("actor_rollout_ref.ref.megatron must equal actor_rollout_ref.actor.megatron: the "
                             "reference model lives in the actor's processes")
        if self.trainer.critic_warmup and not critic.enable:
            raise ValueError(f"trainer.critic_warmup={self.trainer.critic_warmup} needs a critic (critic.enable, or "
                             "an estimator with values such as gae)")
        world = self.trainer.nnodes * self.trainer.n_gpus_per_node
        for name, parallel in (("actor_rollout_ref.actor", actor.megatron), ("critic", critic.megatron)):
            try:
                parallel.data_parallel_size(world)
            except ValueError as error:
                raise ValueError(f"{name}.megatron: {error} (trainer.nnodes x trainer.n_gpus_per_node)") from None

    def _token_budget_defaults(self) -> None:
        """verl's defaults: reference and critic follow the actor; a budget holds one whole sequence."""
        arr, critic = self.actor_rollout_ref, self.critic
        actor, ref = arr.actor, arr.ref
        if ref.log_prob_use_dynamic_bsz is None:
            ref.log_prob_use_dynamic_bsz = actor.use_dynamic_bsz
        ref.log_prob_max_token_len_per_gpu = ref.log_prob_max_token_len_per_gpu or actor.ppo_max_token_len_per_gpu
        if critic.use_dynamic_bsz is None:
            critic.use_dynamic_bsz = actor.use_dynamic_bsz
        critic.ppo_max_token_len_per_gpu = critic.ppo_max_token_len_per_gpu or actor.ppo_max_token_len_per_gpu
        critic.forward_max_token_len_per_gpu = critic.forward_max_token_len_per_gpu or critic.ppo_max_token_len_per_gpu
        sequence = self.data.max_prompt_length + self.data.max_response_length
        for key, used, budget in (
                ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", actor.use_dynamic_bsz, actor.ppo_max_token_len_per_gpu),
                ("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", ref.log_prob_use_dynamic_bsz and self.uses_reference,
                 ref.log_prob_max_token_len_per_gpu),
                ("critic.ppo_max_token_len_per_gpu", critic.use_dynamic_bsz and critic.enable, critic.ppo_max_token_len_per_gpu),
                ("critic.forward_max_token_len_per_gpu", critic.use_dynamic_bsz and critic.enable,
                 critic.forward_max_token_len_per_gpu)):
            if used and budget < sequence:
                raise ValueError(f"{key}={budget} is less than one sequence (data.max_prompt_length + "
                                 f"data.max_response_length = {sequence}): a micro-batch holds whole sequences")

    @property
    def world_size(self) -> int:
        return self.trainer.nnodes * self.trainer.n_gpus_per_node

    @property
    def uses_reference(self) -> bool:
        return self.actor_rollout_ref.actor.use_kl_loss or self.algorithm.use_kl_in_reward
