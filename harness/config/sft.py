"""`python -m harness.main_sft` configuration, with verl's SFT key names where verl has them (its
other keys are translated by `SFTConfig.VERL_KEYS`, harness/config/verl_keys.py)."""
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

from omegaconf import MISSING

from harness.config import verl_keys
from harness.config.checks import check_frequency, check_optimizer, check_range
from harness.config.parallel import ParallelConfig

# "file" is verl's JSON-lines logger: metrics.jsonl, which every run writes.
LOGGERS = ("console", "tensorboard", "wandb", "file")
TRUNCATION = ("error", "left", "right")


def check_loggers(loggers) -> None:
    unknown = [name for name in loggers if name not in LOGGERS]
    if unknown:
        raise ValueError(f"trainer.logger: unknown {unknown}; choose from {list(LOGGERS)}")


@dataclass
class SFTDataConfig:
    train_files: Any = MISSING  # a parquet path or a list of them
    val_files: Any = None
    prompt_key: str = "prompt"
    response_key: str = "response"
    messages_key: str = "messages"  # a chat-list column, used instead of prompt/response when present
    max_length: int = 1024
    truncation: str = "error"  # error | left (keep the end) | right (keep the start)
    train_batch_size: int = 64  # sequences per optimizer step, all data-parallel ranks together
    micro_batch_size_per_gpu: int = 4
    # Token budget of one micro-batch (padded tokens): micro-batches by length instead of by count.
    use_dynamic_bsz: Optional[bool] = None  # null: on when max_token_len_per_gpu is set
    max_token_len_per_gpu: Optional[int] = None
    shuffle: bool = True

    def __post_init__(self):
        if self.truncation not in TRUNCATION:
            raise ValueError(f"data.truncation={self.truncation!r}: must be one of {', '.join(TRUNCATION)}")
        for key in ("max_length", "train_batch_size", "micro_batch_size_per_gpu"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key}={getattr(self, key)}: must be positive")
        check_range("data.max_token_len_per_gpu", self.max_token_len_per_gpu, 1)
        if self.use_dynamic_bsz is None:
            self.use_dynamic_bsz = self.max_token_len_per_gpu is not None
        if self.use_dynamic_bsz and self.max_token_len_per_gpu is None:
            raise ValueError("data.use_dynamic_bsz=true needs data.max_token_len_per_gpu (the token budget)")


@dataclass
class SFTModelConfig:
    partial_pretrain: str = MISSING  # an HF model directory or a converted torch_dist checkpoint
    dtype: str = "fp32"  # fp32 | bf16 | fp16

    def __post_init__(self):
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"model.dtype={self.dtype!r}: must be fp32, bf16 or fp16")


@dataclass
class SFTOptimConfig:
    lr: float = 1e-5
    min_lr_ratio: float = 0.0
    min_lr: Optional[float] = None  # Megatron's absolute form; sets min_lr_ratio = min_lr / lr
    warmup_steps_ratio: float = 0.0
    lr_warmup_steps: int = -1  # steps of linear warmup; -1: warmup_steps_ratio of the run
    lr_scheduler: str = "cosine"  # cosine | constant | linear
    clip_grad: float = 1.0
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])

    def __post_init__(self):
        if self.min_lr is not None and self.lr > 0:
            self.min_lr_ratio = self.min_lr / self.lr
        check_optimizer("optim.", self, "warmup_steps_ratio")
        if self.lr_scheduler not in ("cosine", "constant", "linear"):
            raise ValueError(f"optim.lr_scheduler={self.lr_scheduler!r}: must be cosine, constant or linear")


@dataclass
class SFTTrainerConfig:
    total_epochs: int = 1
    total_training_steps: Optional[int] = None  # overrides the epoch count when set
    default_local_dir: str = "outputs/sft"
    project_name: str = "harness"
    experiment_name: str = "sft"
    logger: List[str] = field(default_factory=lambda: ["console"])
    save_freq: int = -1  # steps; -1: only at the end
    test_freq: int = -1  # steps; -1: only at the end
    resume_mode: str = "auto"  # auto | disable | a checkpoint directory
    seed: int = 1
    export_hf: bool = True  # export the best checkpoint (by validation loss) to HF at the end
    skip_memory_check: bool = False  # start even when the planner says the config cannot fit the GPUs

    def __post_init__(self):
        check_loggers(self.logger)
        check_range("trainer.total_epochs", self.total_epochs, 1)
        check_range("trainer.total_training_steps", self.total_training_steps, 1)
        check_frequency("trainer.save_freq", self.save_freq)
        check_frequency("trainer.test_freq", self.test_freq)


@dataclass
class SFTConfig:
    VERL_KEYS: ClassVar[dict] = verl_keys.SFT_KEYS

    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    trainer: SFTTrainerConfig = field(default_factory=SFTTrainerConfig)
    megatron: ParallelConfig = field(default_factory=ParallelConfig)
