"""Loss aggregation: hand values, padding invariance, and micro-batch gradient equivalence."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from harness.algorithms import (AGGREGATION_MODES, aggregate_loss, compute_policy_loss, global_batch_counts,
                                kl_loss, value_loss)
from harness.algorithms.registry import UnknownNameError

MODES = AGGREGATION_MODES.names()
SETTINGS = settings(max_examples=20, deadline=None)


def test_every_mode_by_hand():
    # Sequence 1: tokens 1, 2, 3 (sum 6, mean 2); sequence 2: token 4 (sum 4, mean 4); a fully padded
    # row (micro-batch filler) must count for nothing.
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    expected = {"token-mean": 10 / 4, "seq-mean-token-sum": (6 + 4) / 2, "seq-mean-token-mean": (2 + 4) / 2,
                "seq-mean-token-sum-norm": (6 + 4) / (2 * 3)}
    assert set(expected) == set(MODES)
    for mode, value in expected.items():
        assert aggregate_loss(loss_mat, mask, mode).item() == pytest.approx(value), mode
    # Dr. GRPO's constant: a run-wide max length of 8 instead of this batch's width.
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-sum-norm", loss_scale_factor=8).item() == \
        pytest.approx(10 / 16)


def test_unknown_mode_lists_registered_ones():
    with pytest.raises(UnknownNameError, match="'token-sum'; registered: token-mean, seq-mean-token-sum"):
        aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "token-sum")


@st.composite
def batches(draw):
    batch = draw(st.integers(2, 8))
    width = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, width + 1, (batch,), generator=generator)  # 0: a fully padded row
    mask = (torch.arange(width) < lengths.unsqueeze(-1)).float()
    cuts = sorted(draw(st.lists(st.integers(1, batch - 1), max_size=3, unique=True)))
    return mask, generator, [0, *cuts, batch]


def micro_batches(mask, bounds):
    """Slices of the batch, each trimmed to its own longest response (padded differently)."""
    for start, stop in zip(bounds, bounds[1:]):
        width = max(int(mask[start:stop].sum(-1).max()), 1)
        yield slice(start, stop), width


@SETTINGS
@given(batches())
def test_micro_batch_gradients_equal_one_batch_gradient(batch):
    mask, generator, bounds = batch
    theta = torch.randn(mask.shape, generator=generator, requires_grad=True)
    tokens, sequences = global_batch_counts(mask[s, :w] for s, w in micro_batches(mask, bounds))
    loss_of = lambda x: torch.sin(x) * x  # noqa: E731  (any token-wise nonlinear loss)
    for mode in MODES:
        normalizers = dict(global_token_count=tokens, global_seq_count=sequences, loss_scale_factor=mask.shape[1])
        full = aggregate_loss(loss_of(theta), mask, mode, loss_scale_factor=mask.shape[1])
        (full_grad,) = torch.autograd.grad(full, theta)
        summed = sum(aggregate_loss(loss_of(theta[s, :w]), mask[s, :w], mode, **normalizers)
                     for s, w in micro_batches(mask, bounds))
        (micro_grad,) = torch.autograd.grad(summed, theta)
        assert torch.allclose(summed, full, atol=1e-5), mode
        assert torch.allclose(micro_grad, full_grad, atol=1e-6), mode


@SETTINGS
@given(batches(), st.sampled_from(["vanilla", "gspo", "cispo"]))
def test_micro_batch_gradients_of_full_losses(batch, loss_mode):
    mask, generator, bounds = batch
    old = -torch.rand(mask.shape, generator=generator) * 3
    log_prob = (old + 0.3 * torch.randn(mask.shape, generator=generator)).requires_grad_(True)
    advantages = torch.randn(mask.shape, generator=generator)
    tokens, sequences = global_batch_counts(mask[s, :w] for s, w in micro_batches(mask, bounds))
    for mode in MODES:
        common = dict(loss_agg_mode=mode, loss_scale_factor=mask.shape[1])
        full, _ = compute_policy_loss(loss_mode, old_log_prob=old, log_prob=log_prob, advantages=advantages,
                                      response_mask=mask, **common)
        full = full + kl_loss(log_prob=log_prob, ref_log_prob=old, response_mask=mask, **common)
        (full_grad,) = torch.autograd.grad(full, log_prob)
        summed = 0
        for s, w in micro_batches(mask, bounds):
            part, _ = compute_policy_loss(loss_mode, old_log_prob=old[s, :w], log_prob=log_prob[s, :w],
                                          advantages=advantages[s, :w], response_mask=mask[s, :w],
                                          global_token_count=tokens, global_seq_count=sequences, **common)
            summed = summed + part + kl_loss(log_prob=log_prob[s, :w], ref_log_prob=old[s, :w],
                                             response_mask=mask[s, :w], global_token_count=tokens,
                                             global_seq_count=sequences, **common)
        (micro_grad,) = torch.autograd.grad(summed, log_prob)
        assert torch.allclose(micro_grad, full_grad, atol=1e-5), (loss_mode, mode)


@SETTINGS
@given(batches(), st.integers(1, 3), st.integers(0, 2))
def test_padding_never_changes_a_loss(batch, extra_columns, extra_rows):
    mask, generator, _ = batch
    shape = mask.shape
    old, advantages = -torch.rand(shape, generator=generator), torch.randn(shape, generator=generator)
    log_prob = old + 0.2 * torch.randn(shape, generator=generator)

    def pad(x, fill_mask=False):
        filler = torch.zeros if fill_mask else torch.randn
        x = torch.cat([x, filler(shape[0], extra_columns)], 1)
        return torch.cat([x, filler(extra_rows, x.shape[1])], 0)

    scale = shape[1] + extra_columns
    for mode in MODES:
        for loss_mode in ["vanilla", "gspo", "cispo"]:
            plain, plain_metrics = compute_policy_loss(loss_mode, old_log_prob=old, log_prob=log_prob,
                                                       advantages=advantages, response_mask=mask,
                                                       loss_agg_mode=mode, loss_scale_factor=scale)
            padded, padded_metrics = compute_policy_loss(loss_mode, old_log_prob=pad(old), log_prob=pad(log_prob),
                                                         advantages=pad(advantages), response_mask=pad(mask, True),
                                                         loss_agg_mode=mode, loss_scale_factor=scale)
            assert torch.allclose(plain, padded, atol=1e-6), (mode, loss_mode)
            for key in plain_metrics:
                assert torch.allclose(plain_metrics[key], padded_metrics[key], atol=1e-6), key
        plain, _ = value_loss(vpreds=log_prob, returns=advantages, values=old, response_mask=mask, loss_agg_mode=mode,
                              loss_scale_factor=scale)
        padded, _ = value_loss(vpreds=pad(log_prob), returns=pad(advantages), values=pad(old),
                               response_mask=pad(mask, True), loss_agg_mode=mode, loss_scale_factor=scale)
        assert torch.allclose(plain, padded, atol=1e-6), mode
