"""Masked reductions, group (segment) reductions and input checks shared by every algorithm file."""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is set, over everything (dim None) or over ``dim``.

    torch's sums are accurate over millions of tokens (a float32 dot product drifts by ~1e-5).
    Padding must hold finite numbers (garbage is fine, NaN/inf is not: 0 * inf = NaN); rewards are
    checked by ``check_finite`` for that reason.
    """
    masked = values * mask
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, *,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Zero mean, unit (unbiased) variance over valid entries; padding comes out as 0.

    Two passes (mean, then the centered sum of squares) with torch's accurate sums, so large means
    cost no precision. ``out`` may be ``values`` itself (whitened in place).
    """
    out = torch.mul(values, mask, out=out)
    count = mask.sum()
    out.sub_(out.sum() / count.clamp(min=1)).mul_(mask)
    variance = sum_of_squares(out) / (count - 1).clamp(min=1)
    return out.mul_(torch.rsqrt(variance + eps))


def sum_of_squares(values: torch.Tensor, block_elements: int = 1 << 20) -> torch.Tensor:
    """sum(values ** 2) through blocks of rows: one small reused temporary instead of a [batch, len]
    one (a float32 dot product would need none, but drifts by ~1e-5 over millions of entries)."""
    if values.dim() < 2 or values.numel() == 0:
        return values.square().sum()
    rows = max(1, block_elements // values.shape[-1])
    return torch.stack([block.square().sum() for block in values.split(rows)]).sum()


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
    """Arbitrary group ids (ints, or uid strings as verl's ``uid``) -> dense ids 0..G-1 and G.

    Dense ids keep the order of the original ones. Ids no larger than a few batch sizes (prompt
    indices) are ranked by counting; others (hashes, offsets) by sorting.
    """
    if not isinstance(group_index, torch.Tensor):
        # uids such as strings cannot live in a tensor; this one pass is not on the tensor hot path.
        dense: dict[Hashable, int] = {}
        group_index = torch.tensor([dense.setdefault(uid, len(dense)) for uid in group_index],
                                   device=device)
    group_index = group_index.to(device)
    if group_index.numel() and not group_index.is_floating_point() and group_index.dtype != torch.bool:
        low, high = (int(bound) for bound in torch.aminmax(group_index))
        if low >= 0 and high < 4 * group_index.numel():
            present = torch.bincount(group_index, minlength=high + 1) > 0
            return to_samples(torch.cumsum(present, 0) - 1, group_index), int(present.sum())
    unique, dense_ids = torch.unique(group_index, return_inverse=True)
    return dense_ids, unique.numel()


def to_samples(group_values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``group_values[group_ids]``: each sample's entry. index_select stays on the calling thread;
    advanced indexing of 16k entries wakes the thread pool (~4 ms each on a loaded 2-core machine)."""
    return torch.index_select(group_values, 0, group_ids)


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
    squared_deviation = group_sum((values - to_samples(mean, group_ids)) ** 2, group_ids, num_groups)
    std = torch.sqrt(squared_deviation / (count - 1).clamp(min=1))
    return mean, std, sizes


def require_groups_of_two(group_ids: torch.Tensor, sizes: torch.Tensor, estimator: str) -> None:
    if bool((sizes < 2).any()):
        alone = sizes[group_ids] < 2
        raise ValueError(
            f"{estimator} needs at least 2 samples per group (actor_rollout_ref.rollout.n > 1): "
            f"sample {int(torch.nonzero(alone)[0])} is alone in its group, so it has no baseline")
