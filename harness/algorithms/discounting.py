"""Discounted sums over the valid tokens of responses, in closed form instead of a loop over time.

Returns and GAE are the backward recurrence ``S_t = x_t + discount^mask_t * S_{t+1}``: a valid token
discounts what follows it once, a masked one (tool output between the turns of a multi-turn
response) passes the running sum on unchanged. With ``E_t = discount^(valid tokens before t)``:

    S_t = sum_{s >= t} E_s x_s / E_t

one reverse cumulative sum over the batch, whole-tensor operations in place on a few buffers: no
Python loop over time steps (verl's 1,024 small kernels for 1,024 tokens) and no new [batch, len]
temporary per operation (on CPU, fresh memory costs more than the arithmetic). E is taken relative
to the start of a segment of columns short enough that it stays inside float32's range
(``discount^segment >= e^-60``); segments hand their first sum to the segment before them.
"""
from __future__ import annotations

import math

import torch

LOG_SCALE_RANGE = 60.0  # e^-60 ~ 9e-27: far above float32's smallest normal number (1.2e-38)


def _reverse_cumsum_(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """x <- suffix sums of x along the last dim, in place (``scratch``: same shape, overwritten)."""
    reverse = torch.arange(x.shape[-1] - 1, -1, -1, device=x.device)
    torch.index_select(x, -1, reverse, out=scratch)  # torch.flip has no out=; this avoids two allocations
    scratch.cumsum_(-1)
    return torch.index_select(scratch, -1, reverse, out=x)


def discounted_suffix_sums_(x: torch.Tensor, response_mask: torch.Tensor, discount: float,
                            scratch: torch.Tensor | None = None) -> torch.Tensor:
    """In place, x_t <- sum over s >= t of discount^(valid tokens in [t, s)) * x_s; returns x.

    Exact on valid tokens. On a masked token it is the sum carried over it (discount 0 leaves x there).
    ``scratch``: a buffer of x's shape the caller has no use for yet (one allocation less).
    """
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must lie in [0, 1], got {discount}")
    if discount == 0.0:  # S_t = x_t on every valid token: nothing reaches back
        return x
    mask = response_mask.to(x.dtype)
    scratch = torch.empty_like(x) if scratch is None else scratch
    if discount == 1.0:
        return _reverse_cumsum_(x, scratch)
    log_discount = math.log(discount)
    columns = x.shape[-1]
    segment = max(1, int(LOG_SCALE_RANGE / -log_discount))
    starts = list(range(0, columns, segment))
    # scale: valid tokens before t, then (per segment, in place) E_t relative to the segment start.
    scale = torch.cumsum(mask, -1).sub_(mask)
    ends = torch.cat([scale[:, starts[1:]], scale[:, -1:] + mask[:, -1:]], -1)  # valid before each stop
    bases = scale[:, starts]
    carry = None
    for index in reversed(range(len(starts))):
        columns_of = slice(starts[index], min(starts[index] + segment, columns))
        segment_scale = scale[:, columns_of].sub_(bases[:, index:index + 1]).mul_(log_discount).exp_()
        segment_x = x[:, columns_of].mul_(segment_scale)
        _reverse_cumsum_(segment_x, scratch[:, columns_of])
        if carry is not None:  # the later segment's first sum, discounted over this whole segment
            reach = (ends[:, index] - bases[:, index]).mul_(log_discount).exp_()
            segment_x.add_((reach * carry).unsqueeze(-1))
        segment_x.div_(segment_scale)
        carry = segment_x[:, 0]
    return x


def next_valid_values(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """For every token, the value of the first valid token after it (0 when there is none)."""
    rows, columns = values.shape
    positions = torch.arange(columns, device=values.device)
    nearest = torch.where(response_mask.bool(), positions, columns).flip(-1).cummin(-1).values.flip(-1)
    following = torch.cat([nearest[:, 1:], nearest.new_full((rows, 1), columns)], -1)
    return torch.cat([values, values.new_zeros(rows, 1)], -1).gather(-1, following)
