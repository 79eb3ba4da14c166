"""RL checks that run on every rank of a 2-rank gloo group (see tests/support/multirank.py).

Each function initialises model parallel with TP=2 (so the vocabulary is split over the two ranks),
destroys it at the end, and returns plain floats; the tests assert on them in the main process.
"""
import torch

from harness.config import ParallelConfig
from harness.parallel import destroy_model_parallel, initialize_model_parallel

VOCAB = 13  # real vocabulary
PADDED_VOCAB = 16  # Megatron's padded vocabulary: columns 13..15 live on TP rank 1
PAD_LOGIT = 1e4  # huge: any leak of a padded column into the softmax would dominate it


def _tp_rank():
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def _full_logits(batch, seq, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, PADDED_VOCAB, generator=generator) * 3
    logits[..., VOCAB:] = PAD_LOGIT
    return logits


def _shard(full):
    rank, size = _tp_rank()
    local = full.shape[-1] // size
    return full[..., rank * local:(rank + 1) * local]


def _reference(full, tokens, prompt_lengths, response_length):
    """Single-process log-probs and entropy over the first VOCAB columns only."""
    from harness.workers.token_outputs import to_response

    log_softmax = torch.log_softmax(full[..., :VOCAB].float(), dim=-1)
    labels = torch.roll(tokens, -1, dims=1)
    per_position = torch.gather(log_softmax, -1, labels[..., None])[..., 0]
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    return (to_response(per_position, prompt_lengths, response_length),
            to_response(entropy, prompt_lengths, response_length))


def tp2_token_log_probs(seed: int = 3):
    from harness.workers.token_outputs import token_log_probs

    initialize_model_parallel(ParallelConfig(tensor_model_parallel_size=2))
    try:
        rank, size = _tp_rank()
        batch, seq, response_length = 3, 8, 4
        full = _full_logits(batch, seq, seed)
        generator = torch.Generator().manual_seed(seed + 1)
        tokens = torch.randint(0, VOCAB, (batch, seq), generator=generator)
        prompt_lengths = torch.tensor([1, 3, 5])
        ref_lp, ref_ent = _reference(full, tokens, prompt_lengths, response_length)

        # Without entropy gradient: values only.
        shard = _shard(full).clone()
        before = shard.clone()
        lp, ent = token_log_probs(shard, tokens, prompt_lengths, response_length, VOCAB, with_entropy=True)
        report = dict(
            rank=rank, tp_size=size, local_vocab=shard.shape[-1],
            lp_shape=list(lp.shape), ent_shape=list(ent.shape),
            lp_diff=float((lp - ref_lp).abs().max()), ent_diff=float((ent - ref_ent).abs().max()),
            ent_requires_grad=bool(ent.requires_grad),
            input_mutated=float((shard - before).abs().max()),
        )
        lp_only, no_ent = token_log_probs(_shard(full).clone(), tokens, prompt_lengths, response_length, VOCAB)
        report["lp_only_diff"] = float((lp_only - ref_lp).abs().max())
        report["no_entropy_is_none"] = no_ent is None

        # With entropy gradient: d(sum lp + sum ent)/d(this rank's shard) = slice of the reference grad.
        leaf = _shard(full).clone().requires_grad_(True)
        lp, ent = token_log_probs(leaf, tokens, prompt_lengths, response_length, VOCAB,
                                  with_entropy=True, entropy_grad=True)
        report["grad_lp_diff"] = float((lp - ref_lp).abs().max())
        report["grad_ent_diff"] = float((ent - ref_ent).abs().max())
        (lp.sum() + ent.sum()).backward()
        reference_leaf = full.clone().requires_grad_(True)
        r_lp, r_ent = _reference(reference_leaf, tokens, prompt_lengths, response_length)
        (r_lp.sum() + r_ent.sum()).backward()
        expected = _shard(reference_leaf.grad)  # padded columns: zero gradient
        report["grad_diff"] = float((leaf.grad - expected).abs().max())
        report["grad_abs_max"] = float(expected.abs().max())
        report["grad_padded_abs_max"] = float(leaf.grad[..., max(0, VOCAB - rank * leaf.shape[-1]):].abs().max()) \
            if (rank + 1) * leaf.shape[-1] > VOCAB else 0.0
        return report
    finally:
        destroy_model_parallel()


def _policy_batch(batch, seq, seed):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (batch, seq), generator=generator)
    prompt_lengths = torch.randint(1, 6, (batch,), generator=generator)
    response_length = 6
    lengths = torch.randint(1, response_length + 1, (batch,), generator=generator)
    lengths[3] = 0  # one sequence with no loss token (must not count as a sequence)
    mask = (torch.arange(response_length)[None] < lengths[:, None]).float()
    full = _full_logits(batch, seq, seed + 7)
    ref_lp, _ = _reference(full, tokens, prompt_lengths, response_length)
    # Old log-probs off the current ones by up to +-0.6 in log-ratio, so clipping happens.
    old = ref_lp + (torch.rand(batch, response_length, generator=generator) - 0.5) * 1.2
    data = dict(tokens=tokens, prompt_lengths=prompt_lengths, loss_mask=mask, old_log_probs=old,
                advantages=torch.randn(batch, response_length, generator=generator),
                rollout_is_weights=torch.rand(batch, response_length, generator=generator) + 0.5,
                ref_log_probs=ref_lp + torch.randn(batch, response_length, generator=generator) * 0.1)
    return full, data


def tp2_policy_loss_split(cases, seed: int = 5, micro_batch_size: int = 2):
    """For each case (loss_agg_mode, entropy_coeff, use_is_weights, use_kl_loss): the whole mini-batch
    of 8 in one micro-batch vs 4 micro-batches of 2, with counts = global tokens/sequences, scale 1.
    Then the whole mini-batch again at TP=1 (full vocabulary on each rank): same loss, and this
    rank's TP=2 gradient is the matching vocabulary slice of the TP=1 gradient."""
    from harness.algorithms import global_batch_counts
    from harness.workers.rl_losses import MiniBatchCounts, PolicyLossSettings, policy_loss, sum_metrics

    initialize_model_parallel(ParallelConfig(tensor_model_parallel_size=2))
    try:
        reports = []
        batch, seq = 8, 16
        full, data = _policy_batch(batch, seq, seed)
        tokens_count, sequences = global_batch_counts([data["loss_mask"]])
        counts = MiniBatchCounts(tokens_count, sequences, 1.0)
        for mode, entropy_coeff, use_is, use_kl in cases:
            settings = PolicyLossSettings(loss_agg_mode=mode, entropy_coeff=entropy_coeff, use_kl_loss=use_kl,
                                          kl_loss_coef=0.1)
            batch_data = {k: v for k, v in data.items() if use_is or k != "rollout_is_weights"}

            whole_leaf = _shard(full).clone().requires_grad_(True)
            whole_loss, whole_metrics = policy_loss(whole_leaf, batch_data, settings=settings, counts=counts,
                                                    vocab_size=VOCAB)
            whole_loss.backward()

            split_loss, split_metrics, split_grads = 0.0, [], []
            for start in range(0, batch, micro_batch_size):
                rows = slice(start, start + micro_batch_size)
                leaf = _shard(full)[rows].clone().requires_grad_(True)
                micro = {k: v[rows] for k, v in batch_data.items()}
                loss, metrics = policy_loss(leaf, micro, settings=settings, counts=counts, vocab_size=VOCAB)
                loss.backward()
                split_loss += float(loss)
                split_metrics.append(metrics)
                split_grads.append(leaf.grad)
            split_grad = torch.cat(split_grads)

            scaled_loss, _ = policy_loss(_shard(full).clone(), batch_data, settings=settings,
                                         counts=MiniBatchCounts(tokens_count, sequences, 4.0), vocab_size=VOCAB)
            whole_sums, split_sums = sum_metrics([whole_metrics]), sum_metrics(split_metrics)
            reports.append(dict(
                case=[mode, entropy_coeff, use_is, use_kl], tokens=tokens_count, sequences=sequences,
                whole_loss=float(whole_loss), split_loss=split_loss,
                scaled_loss=float(scaled_loss),
                grad_diff=float((split_grad - whole_leaf.grad).abs().max()),
                grad_abs_max=float(whole_leaf.grad.abs().max()),
                whole_metrics=whole_sums, split_metrics=split_sums,
            ))
            reports[-1]["_grad"] = whole_leaf.grad
    finally:
        destroy_model_parallel()
    initialize_model_parallel(ParallelConfig())
    try:
        for (mode, entropy_coeff, use_is, use_kl), report in zip(cases, reports):
            settings = PolicyLossSettings(loss_agg_mode=mode, entropy_coeff=entropy_coeff, use_kl_loss=use_kl,
                                          kl_loss_coef=0.1)
            batch_data = {k: v for k, v in data.items() if use_is or k != "rollout_is_weights"}
            leaf = full.clone().requires_grad_(True)
            loss, _ = policy_loss(leaf, batch_data, settings=settings, counts=counts, vocab_size=VOCAB)
            loss.backward()
            tp2_grad = report.pop("_grad")
            report["tp1_loss"] = float(loss)
            # Rank r of the TP=2 group held vocabulary columns [8r, 8r+8).
            report["tp1_grad_diffs"] = [float((tp2_grad - leaf.grad[..., 8 * r:8 * r + 8]).abs().max())
                                        for r in range(2)]
        return reports
    finally:
        destroy_model_parallel()

