"""Optimizer settings and the learning-rate schedule shared by every trained Megatron model."""
import math

from harness.workers.megatron_engine import OptimConfig


def optim_config(lr: float, min_lr_ratio: float, weight_decay: float, betas, clip_grad: float) -> OptimConfig:
    return OptimConfig(lr=lr, min_lr=lr * min_lr_ratio, weight_decay=weight_decay, adam_beta1=betas[0],
                       adam_beta2=betas[1], clip_grad=clip_grad)


def lr_scheduler(optimizer, *, lr: float, min_lr_ratio: float, warmup_ratio: float, style: str,
                 weight_decay: float, total_steps: int, warmup_steps: int = -1):
    """Linear warmup over `warmup_steps` (-1: `warmup_ratio` of the run), then cosine / linear / constant."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    warmup = warmup_steps if warmup_steps >= 0 else int(math.floor(warmup_ratio * total_steps))
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=lr,
        min_lr=lr * min_lr_ratio,
        lr_warmup_steps=warmup,
        lr_decay_steps=max(total_steps, warmup + 1),
        lr_decay_style=style,
        start_wd=weight_decay,
        end_wd=weight_decay,
        wd_incr_steps=max(total_steps, 1),
        wd_incr_style="constant",
    )
