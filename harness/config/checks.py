"""Value checks shared by the config dataclasses; each error names the key and the allowed range."""
from typing import Optional


def check_range(key: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> None:
    """`low <= value <= high` (strict at an open end); None passes (an unset optional key)."""
    if value is None:
        return
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
    elif high is not None and (value >= high if high_open else value > high):
        bound = f"< {high}" if high_open else f"<= {high}"
    else:
        return
    if low is not None and high is not None:
        bound = f"within {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{key}={value}: must be {bound}")


def check_frequency(key: str, value: int) -> None:
    """Every N steps; -1 (or 0): never, only at the end."""
    if value < -1:
        raise ValueError(f"{key}={value}: must be -1 (only at the end) or a number of steps")


def check_optimizer(prefix: str, optim, warmup_ratio_key: str) -> None:
    """An optimizer block's values; `prefix` names its keys in errors ("optim." or "")."""
    check_range(f"{prefix}lr", optim.lr, 0, low_open=True)
    check_range(f"{prefix}min_lr_ratio", optim.min_lr_ratio, 0, 1)
    check_range(f"{prefix}{warmup_ratio_key}", getattr(optim, warmup_ratio_key), 0, 1)
    check_range(f"{prefix}weight_decay", optim.weight_decay, 0)
    check_range(f"{prefix}clip_grad", optim.clip_grad, 0, low_open=True)
    if len(optim.betas) != 2 or not all(0 <= beta < 1 for beta in optim.betas):
        raise ValueError(f"{prefix}betas={list(optim.betas)}: must be two values within [0, 1)")
    warmup_steps: Optional[int] = optim.lr_warmup_steps
    if warmup_steps < -1:
        raise ValueError(f"{prefix}lr_warmup_steps={warmup_steps}: must be -1 (use the ratio) or a number of steps")
