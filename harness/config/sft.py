"""`python -m harness.main_sft` configuration, with verl's SFT key names where verl has them."""
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from harness.config.parallel import ParallelConfig

LOGGERS = ("console", "tensorboard", "wandb")


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
    truncation: str = "error"  # error | right
    train_batch_size: int = 64  # sequences per optimizer step, all data-parallel ranks together
    micro_batch_size_per_gpu: int = 4
    # Token budget of one micro-batch (padded tokens); batches by length instead of by count when set.
    max_token_len_per_gpu: Optional[int] = None
    shuffle: bool = True

    def __post_init__(self):
        if self.truncation not in ("error", "right"):
            raise ValueError(f"data.truncation={self.truncation!r}: must be 'error' or 'right'")
        for key in ("max_length", "train_batch_size", "micro_batch_size_per_gpu"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key}={getattr(self, key)}: must be positive")


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
    warmup_steps_ratio: float = 0.0
    lr_scheduler: str = "cosine"  # cosine | constant | linear
    clip_grad: float = 1.0
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])

    def __post_init__(self):
        if not 0.0 <= self.warmup_steps_ratio <= 1.0:
            raise ValueError(f"optim.warmup_steps_ratio={self.warmup_steps_ratio}: must be within [0, 1]")
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


@dataclass
class SFTConfig:
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    trainer: SFTTrainerConfig = field(default_factory=SFTTrainerConfig)
    megatron: ParallelConfig = field(default_factory=ParallelConfig)
