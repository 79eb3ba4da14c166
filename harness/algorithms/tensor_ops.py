"""Masked reductions, group (segment) reductions and input checks shared by every algorithm file."""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is set, over everything (dim None) or the last dim (dim -1).

    A dot product: no [batch, len] temporary, which on the hot path costs more than the arithmetic.
    Padding must hold finite numbers (garbage is fine, NaN/inf is not: 0 * inf = NaN); rewards are
    checked by ``check_finite`` for that reason.
    """
    weights = mask.to(values.dtype)
    if dim is None:
        return torch.dot(values.reshape(-1), weights.reshape(-1))
    if dim not in (-1, values.dim() - 1):
        raise ValueError(f"masked_sum reduces everything or the last dim, not dim={dim}")
    return torch.einsum("...t,...t->...", values, weights)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the valid entries (Bessel's correction, as ``torch.var``)."""
    mean = masked_mean(values, mask)
    count = mask.sum().to(values.dtype)
    return masked_sum((values - mean) ** 2, mask) / (count - 1).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over valid entries; padding comes out as 0."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    return zero_padding((values - mean) * torch.rsqrt(var + eps), mask)


def zero_padding(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values * mask.to(values.dtype)


def check_finite(name: str, values: torch.Tensor) -> None:
    """Raise naming the first sample (and token) holding NaN/inf, instead of a silent NaN loss.

    Padding is checked too: a non-finite value there would poison the masked sums. One sum is the
    fast test (non-finite in, non-finite out); only then is the culprit searched for.
    """
    if torch.isfinite(values.sum()):
        return
    bad = ~torch.isfinite(values)
    if not bad.any():  # the sum overflowed, every value is finite
        return
    position = torch.nonzero(bad)[0].tolist()
    where = f"sample {position[0]}" + (f", token {position[1]}" if len(position) > 1 else "")
    value = values[tuple(position)].item()
    raise ValueError(f"{name} holds a non-finite value ({value}) at {where}; "
                     f"{int(bad.sum())} such entries in total")


def as_group_ids(group_index: torch.Tensor | Sequence[Hashable], device: torch.device | None = None
                 ) -> tuple[torch.Tensor, int]:
    """Arbitrary group ids (ints, or uid strings as verl's ``uid``) -> dense ids 0..G-1 and G."""
    if not isinstance(group_index, torch.Tensor):
        # uids such as strings cannot live in a tensor; this one pass is not on the tensor hot path.
        dense: dict[Hashable, int] = {}
        group_index = torch.tensor([dense.setdefault(uid, len(dense)) for uid in group_index],
                                   device=device)
    unique, dense_ids = torch.unique(group_index.to(device), return_inverse=True)
    return dense_ids, unique.numel()


def group_sum(values: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    return torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, group_ids, values)


def group_size(group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    return torch.bincount(group_ids, minlength=num_groups)


def group_mean_std(values: torch.Tensor, group_ids: torch.Tensor, num_groups: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group mean and unbiased std (two passes: stable for large rewards), and group sizes."""
    sizes = group_size(group_ids, num_groups)
    count = sizes.to(values.dtype)
    mean = group_sum(values, group_ids, num_groups) / count.clamp(min=1)
    squared_deviation = group_sum((values - mean[group_ids]) ** 2, group_ids, num_groups)
    std = torch.sqrt(squared_deviation / (count - 1).clamp(min=1))
    return mean, std, sizes


def require_groups_of_two(group_ids: torch.Tensor, sizes: torch.Tensor, estimator: str) -> None:
    alone = sizes[group_ids] < 2
    if alone.any():
        raise ValueError(
            f"{estimator} needs at least 2 samples per group (actor_rollout_ref.rollout.n > 1): "
            f"sample {int(torch.nonzero(alone)[0])} is alone in its group, so it has no baseline")
