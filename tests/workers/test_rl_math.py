"""The RL batch layout, mini-batch plan, prompt order, update-report merging, and the loss math of
the Megatron RL workers: TP-split log-probs/entropy and micro-batch-split invariance of the losses."""
import json
import math

import pytest
import torch

from harness.trainer.ppo_support import combine_updates, micro_batch_size
from harness.trainer.rl_batch import PromptOrder, Sample, minibatch_counts, minibatch_plan, to_tensors
from harness.workers.rl_losses import MiniBatchCounts, sum_metrics, value_loss_fn
from harness.workers.token_outputs import to_response

PAD = 99


def _sample(prompt, response, log_probs, score, index=0):
    return Sample(prompt_index=index, group=index, prompt_ids=prompt, response_ids=response,
                  rollout_log_probs=log_probs, finish_reason="stop", score=score)


# ---------------------------------------------------------------- to_tensors / to_response

def test_to_tensors_layout():
    samples = [_sample([1, 2, 3], [4, 5], [-0.1, -0.2], 1.5, 0),
               _sample([6, 7, 8, 9, 10], [11, 12, 13, 14], [-1.0, -2.0, -3.0, -4.0], -0.5, 1)]
    out = to_tensors(samples, pad_token_id=PAD)
    assert out["input_ids"].shape == (2, 16)  # longest sequence 9 -> rounded up to 16
    assert out["input_ids"][0].tolist() == [1, 2, 3, 4, 5] + [PAD] * 11
    assert out["input_ids"][1].tolist() == [6, 7, 8, 9, 10, 11, 12, 13, 14] + [PAD] * 7
    assert out["input_ids"].dtype == torch.long
    assert out["prompt_lengths"].tolist() == [3, 5]
    assert out["response_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]  # R = longest response
    assert torch.allclose(out["rollout_log_probs"], torch.tensor([[-0.1, -0.2, 0, 0], [-1.0, -2.0, -3.0, -4.0]]))
    # The score sits on the last response token only.
    assert out["token_level_scores"].tolist() == [[0, 1.5, 0, 0], [0, 0, 0, -0.5]]
    # Response token j of each row is input_ids[P + j], the token that position P - 1 + j predicts.
    for row, s in enumerate(samples):
        P = len(s.prompt_ids)
        assert out["input_ids"][row, P:P + len(s.response_ids)].tolist() == s.response_ids


def test_to_tensors_sequence_length_multiple_of_8():
    exact = to_tensors([_sample([1, 2, 3], [4, 5, 6, 7, 8], [0.0] * 5, 1.0)], pad_token_id=PAD)
    assert exact["input_ids"].shape == (1, 8)
    one_more = to_tensors([_sample([1, 2, 3, 4], [4, 5, 6, 7, 8], [0.0] * 5, 1.0)], pad_token_id=PAD)
    assert one_more["input_ids"].shape == (1, 16)
    for length in range(1, 30):
        out = to_tensors([_sample([1] * length, [2], [0.0], 0.0)], pad_token_id=PAD)
        assert out["input_ids"].shape[1] % 8 == 0 and out["input_ids"].shape[1] >= length + 1


def test_to_response_reads_position_p_minus_1_plus_j():
    batch, seq, response_length = 3, 16, 5
    positions = torch.arange(seq).repeat(batch, 1) + 100 * torch.arange(batch)[:, None]
    prompt_lengths = torch.tensor([1, 4, 9])
    out = to_response(positions, prompt_lengths, response_length)
    assert out.shape == (batch, response_length)
    for i in range(batch):
        for j in range(response_length):
            assert out[i, j] == 100 * i + int(prompt_lengths[i]) - 1 + j


# ---------------------------------------------------------------- mini-batch plan and counts

def test_minibatch_plan_without_shuffle_is_consecutive_chunks_per_epoch():
    plan = minibatch_plan(8, 4, epochs=2, shuffle=False, seed=0)
    assert [p.tolist() for p in plan] == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2


def test_minibatch_plan_with_shuffle_permutes_each_epoch_deterministically():
    plan = minibatch_plan(12, 4, epochs=3, shuffle=True, seed=7)
    assert len(plan) == 9 and all(len(p) == 4 for p in plan)
    epochs = [torch.cat(plan[e * 3:(e + 1) * 3]).tolist() for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(12))
    assert epochs[0] != list(range(12)) and len({tuple(o) for o in epochs}) > 1  # reshuffled per epoch
    again = minibatch_plan(12, 4, epochs=3, shuffle=True, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(plan, again))
    other = minibatch_plan(12, 4, epochs=3, shuffle=True, seed=8)
    assert any(not torch.equal(a, b) for a, b in zip(plan, other))


def test_minibatch_counts():
    mask = torch.zeros(8, 5)
    lengths = [5, 3, 0, 1, 2, 5, 4, 0]
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    plan = minibatch_plan(8, 4, epochs=1, shuffle=True, seed=3)
    counts = minibatch_counts(mask, plan, data_parallel=2, micro_batch_size=1)
    assert len(counts) == 2
    for index, c in zip(plan, counts):
        assert isinstance(c, MiniBatchCounts)
        assert c.tokens == int(mask[index].sum())
        assert c.sequences == int((mask[index].sum(-1) > 0).sum())  # empty responses are not sequences
        assert c.scale == 2 * 2  # 2 micro-batches per rank x 2 ranks
    assert sum(c.tokens for c in counts) == int(mask.sum())
    # 4 per mini-batch, dp 2 -> 2 per rank; micro 3 -> 1 micro-batch per rank, scale 1 x 2.
    assert [c.scale for c in minibatch_counts(mask, plan, 2, 3)] == [2.0, 2.0]
    # dp 1, micro 1 -> 4 micro-batches; dp 4, micro 1 -> 1 micro-batch per rank x 4.
    assert [c.scale for c in minibatch_counts(mask, plan, 1, 1)] == [4.0, 4.0]
    assert [c.scale for c in minibatch_counts(mask, plan, 4, 1)] == [4.0, 4.0]
    # 4 per mini-batch, dp 1, micro 3 -> ceil(4/3) = 2 micro-batches.
    assert [c.scale for c in minibatch_counts(mask, plan, 1, 3)] == [2.0, 2.0]


def test_minibatch_counts_indivisible_minibatch_raises():
    mask = torch.ones(6, 3)
    with pytest.raises(ValueError, match="data-parallel"):
        minibatch_counts(mask, minibatch_plan(6, 3, 1, False, 0), data_parallel=2, micro_batch_size=1)


# ---------------------------------------------------------------- prompt order

def _epochs_of(order, counts):
    taken = []
    for count in counts:
        chunk = order.take(count)
        assert len(chunk) == count
        taken += chunk
    return taken


@pytest.mark.parametrize("shuffle", [True, False])
def test_prompt_order_crosses_epochs_each_prompt_once_per_epoch(shuffle):
    size = 10
    order = PromptOrder(size, seed=4, shuffle=shuffle)
    taken = _epochs_of(order, [3, 4, 6, 7, 10])  # 30 = 3 epochs, takes straddling the boundaries
    epochs = [taken[i * size:(i + 1) * size] for i in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(size))
    if shuffle:
        assert len({tuple(e) for e in epochs}) == 3  # a fresh permutation per epoch
    else:
        assert all(e == list(range(size)) for e in epochs)
    assert order.state_dict() == {"epoch": 2, "cursor": size}
    assert order.take(0) == []


def test_prompt_order_deterministic_per_seed():
    a = _epochs_of(PromptOrder(10, seed=4, shuffle=True), [7, 7, 7])
    b = _epochs_of(PromptOrder(10, seed=4, shuffle=True), [7, 7, 7])
    c = _epochs_of(PromptOrder(10, seed=5, shuffle=True), [7, 7, 7])
    assert a == b and a != c
    # How the takes are chunked does not matter.
    assert _epochs_of(PromptOrder(10, seed=4, shuffle=True), [1] * 21) == a


@pytest.mark.parametrize("first", [3, 10, 13, 20])
def test_prompt_order_resume_continues_like_uninterrupted(first):
    later = [4, 9, 12]
    uninterrupted = PromptOrder(10, seed=11, shuffle=True)
    uninterrupted.take(first)
    expected = _epochs_of(uninterrupted, later)

    interrupted = PromptOrder(10, seed=11, shuffle=True)
    interrupted.take(first)
    state = json.loads(json.dumps(interrupted.state_dict()))  # checkpoints store it as plain data
    resumed = PromptOrder(10, seed=11, shuffle=True)
    resumed.load_state_dict(state)
    assert _epochs_of(resumed, later) == expected
    assert resumed.state_dict() == uninterrupted.state_dict()


# ---------------------------------------------------------------- combine_updates

def test_combine_updates():
    def report(sums, grad_norm, skipped):
        return {"sums": sums, "grad_norm": grad_norm, "skipped": skipped}

    rank0 = {"lr": 1e-6, "minibatches": [report({"actor/pg_loss": 0.25, "actor/ppo_kl": 0.01}, 2.0, 0),
                                         report({"actor/pg_loss": -0.5, "actor/ppo_kl": 0.03}, 4.0, 1)]}
    rank1 = {"lr": 1e-6, "minibatches": [report({"actor/pg_loss": 0.75, "actor/ppo_kl": 0.02}, 2.0, 0),
                                         report({"actor/pg_loss": 0.1, "actor/ppo_kl": 0.05}, 4.0, 1)]}
    metrics = combine_updates([rank0, rank1], "actor")
    # Sum over ranks per mini-batch, then mean over mini-batches.
    assert metrics["actor/pg_loss"] == pytest.approx(((0.25 + 0.75) + (-0.5 + 0.1)) / 2)
    assert metrics["actor/ppo_kl"] == pytest.approx(((0.01 + 0.02) + (0.03 + 0.05)) / 2)
    assert metrics["actor/grad_norm"] == pytest.approx(3.0)
    assert metrics["actor/skipped_nonfinite"] == 1  # counted once per mini-batch, not per rank
    assert metrics["actor/lr"] == 1e-6
    # grad_norm is taken from rank 0's report.
    rank1["minibatches"][0]["grad_norm"] = 100.0
    assert combine_updates([rank0, rank1], "actor")["actor/grad_norm"] == pytest.approx(3.0)
    # A non-finite (skipped) step's NaN grad norm does not poison the mean.
    rank0["minibatches"][1]["grad_norm"] = math.nan
    assert combine_updates([rank0, rank1], "critic")["critic/grad_norm"] == pytest.approx(2.0)


# ---------------------------------------------------------------- TP=2 log-probs and entropy

@pytest.fixture(scope="module")
def tp2_log_prob_reports(rank_group):
    return rank_group.run("tests.workers.rank_checks_rl:tp2_token_log_probs", timeout=120)


def test_token_log_probs_tp2_match_single_process_reference(tp2_log_prob_reports):
    """Vocab-parallel log-probs and entropy over 13 real of 16 padded columns (the padded ones, on
    rank 1, hold 1e4) equal log_softmax over the 13 real columns, on both ranks."""
    for rank, r in enumerate(tp2_log_prob_reports):
        where = f"rank {rank}: {r}"
        assert r["rank"] == rank and r["tp_size"] == 2 and r["local_vocab"] == 8, where
        assert r["lp_shape"] == [3, 4] and r["ent_shape"] == [3, 4], where
        assert r["lp_diff"] <= 1e-5 and r["lp_only_diff"] <= 1e-5, where
        assert r["ent_diff"] <= 1e-5, where
        assert r["no_entropy_is_none"] and not r["ent_requires_grad"], where
        assert r["grad_lp_diff"] <= 1e-5 and r["grad_ent_diff"] <= 1e-5, where


def test_token_log_probs_tp2_gradients_match_reference(tp2_log_prob_reports):
    """entropy_grad=True: d(sum log_probs + sum entropy)/d(rank's logit shard) is the slice of the
    single-process gradient (zero on the padded columns)."""
    for rank, r in enumerate(tp2_log_prob_reports):
        where = f"rank {rank}: {r}"
        assert r["grad_abs_max"] > 1e-2, where  # the gradient compared is not trivially zero
        assert r["grad_padded_abs_max"] == 0.0, where
        assert r["grad_diff"] <= 1e-5, where


# ---------------------------------------------------------------- micro-batch split invariance

POLICY_CASES = [("token-mean", 0.0, False, False),
                ("seq-mean-token-sum", 0.0, False, False),
                ("token-mean", 0.01, True, True),
                ("seq-mean-token-sum", 0.01, True, True)]


@pytest.fixture(scope="module")
def policy_reports(rank_group):
    return rank_group.run("tests.workers.rank_checks_rl:tp2_policy_loss_split", timeout=120, cases=POLICY_CASES)


def test_policy_loss_micro_batches_sum_to_the_mini_batch(policy_reports):
    """At TP=2: 4 micro-batches of 2 with global counts (scale 1) sum to the one-micro-batch loss,
    gradient and (sum_metrics) metrics; scale multiplies the loss."""
    reports = policy_reports
    for rank, per_case in enumerate(reports):
        for r in per_case:
            where = f"rank {rank} {r['case']}"
            assert r["sequences"] == 7 and r["tokens"] > 0, where
            assert abs(r["split_loss"] - r["whole_loss"]) <= 1e-6, f"{where}: {r['split_loss']} vs {r['whole_loss']}"
            assert r["scaled_loss"] == pytest.approx(4 * r["whole_loss"], rel=1e-6, abs=1e-7), where
            assert r["grad_abs_max"] > 1e-3, where
            assert r["grad_diff"] <= 1e-6, f"{where}: grad differs by {r['grad_diff']}"
            whole, split = r["whole_metrics"], r["split_metrics"]
            assert set(whole) == set(split), where
            for key in ("actor/pg_loss", "actor/loss", "actor/entropy", "actor/ppo_kl", "actor/pg_clipfrac",
                        "actor/pg_clipfrac_lower"):
                assert abs(split[key] - whole[key]) <= 1e-6, f"{where} {key}: {split[key]} vs {whole[key]}"
            assert whole["actor/pg_clipfrac"] > 0, where  # the clip branch was exercised
            if r["case"][3]:
                assert abs(split["actor/kl_loss"] - whole["actor/kl_loss"]) <= 1e-6, where
    # Both TP ranks see the same (all-reduced) loss.
    for a, b in zip(*reports):
        assert a["whole_loss"] == pytest.approx(b["whole_loss"], abs=1e-6)


def test_policy_loss_tp2_matches_tp1(policy_reports):
    """The actor loss and its logit gradient at TP=2 equal those at TP=1 (the rank's vocab slice)."""
    for rank, per_case in enumerate(policy_reports):
        for r in per_case:
            where = f"rank {rank} {r['case']}"
            assert r["tp1_loss"] == pytest.approx(r["whole_loss"], abs=1e-6), where
            assert r["tp1_grad_diffs"][rank] <= 1e-6, f"{where}: TP=2 vs TP=1 gradient differs by {r['tp1_grad_diffs']}"


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum"])
def test_value_loss_micro_batches_sum_to_the_mini_batch(mode):
    generator = torch.Generator().manual_seed(2)
    batch, seq, response_length = 8, 12, 5
    full = torch.randn(batch, seq, 1, generator=generator)
    lengths = torch.tensor([5, 1, 0, 3, 5, 2, 4, 5])
    mask = (torch.arange(response_length)[None] < lengths[:, None]).float()
    data = dict(prompt_lengths=torch.randint(1, 7, (batch,), generator=generator), response_mask=mask,
                returns=torch.randn(batch, response_length, generator=generator),
                values=torch.randn(batch, response_length, generator=generator))
    counts = MiniBatchCounts(int(mask.sum()), int((mask.sum(-1) > 0).sum()), 1.0)

    whole_leaf = full.clone().requires_grad_(True)
    whole_loss, whole_metrics = value_loss_fn(whole_leaf, data, cliprange_value=0.2, loss_agg_mode=mode, counts=counts)
    whole_loss.backward()

    split_loss, split_metrics, grads = 0.0, [], []
    for start in range(0, batch, 2):
        leaf = full[start:start + 2].clone().requires_grad_(True)
        loss, metrics = value_loss_fn(leaf, {k: v[start:start + 2] for k, v in data.items()}, cliprange_value=0.2,
                                      loss_agg_mode=mode, counts=counts)
        loss.backward()
        split_loss += float(loss)
        split_metrics.append(metrics)
        grads.append(leaf.grad)
    assert abs(split_loss - float(whole_loss)) <= 1e-6
    grad = torch.cat(grads)
    assert whole_leaf.grad.abs().max() > 1e-3
    assert (grad - whole_leaf.grad).abs().max() <= 1e-6
    whole, split = sum_metrics([whole_metrics]), sum_metrics(split_metrics)
    assert set(whole) == {"critic/vf_loss", "critic/vf_clipfrac", "critic/vpred_mean"}
    for key in whole:
        assert split[key] == pytest.approx(whole[key], abs=1e-6), key
    assert 0 < whole["critic/vf_clipfrac"] < 1
    # The whole-batch loss is the documented one: 0.5 max((V-R)^2, (clip(V)-R)^2) aggregated.
    v = to_response(full[..., 0], data["prompt_lengths"], response_length)
    clipped = data["values"] + (v - data["values"]).clamp(-0.2, 0.2)
    per_token = 0.5 * torch.maximum((v - data["returns"]) ** 2, (clipped - data["returns"]) ** 2) * mask
    expected = per_token.sum() / (counts.tokens if mode == "token-mean" else counts.sequences)
    assert float(whole_loss) == pytest.approx(float(expected), abs=1e-6)
    # scale multiplies the returned loss.
    scaled, _ = value_loss_fn(full, data, cliprange_value=0.2, loss_agg_mode=mode,
                              counts=MiniBatchCounts(counts.tokens, counts.sequences, 3.0))
    assert float(scaled) == pytest.approx(3 * float(whole_loss), rel=1e-6)


# ---------------------------------------------------------------- token-budget micro-batches (use_dynamic_bsz)

def test_token_budget_micro_batch_size():
    batch = {"input_ids": torch.zeros(8, 16, dtype=torch.long)}
    assert micro_batch_size(batch, 4, False, 50) == 4  # fixed: ppo_micro_batch_size_per_gpu
    assert micro_batch_size(batch, 4, True, 50) == 3  # 3 sequences x 16 padded tokens fit 50
    assert micro_batch_size(batch, 4, True, 10) == 1  # never less than one whole sequence
    assert micro_batch_size(batch, 4, True, 10_000) == 625
    # 8 sequences a rank in micro-batches of 3: 3 + 3 + 2, and Megatron's division by 3 undone.
    mask = torch.ones(16, 5)
    counts = minibatch_counts(mask, minibatch_plan(16, 16, 1, False, 0), data_parallel=2, micro_batch_size=3)
    assert [c.scale for c in counts] == [3 * 2]


@pytest.fixture(scope="module")
def budget_reports(rank_group):
    size = micro_batch_size({"input_ids": torch.zeros(8, 16, dtype=torch.long)}, 8, True, 50)
    assert size == 3
    return rank_group.run("tests.workers.rank_checks_rl:tp2_policy_loss_split", timeout=120, cases=POLICY_CASES,
                          micro_batch_size=size)


def test_uneven_token_budget_micro_batches_give_the_mini_batch_loss_exactly(budget_reports):
    """Micro-batches of 3, 3 and 2 sequences (a token budget of 50 at a padded length of 16) sum to the
    one-micro-batch loss, gradient and metrics: the global-count losses make any split exact."""
    for rank, per_case in enumerate(budget_reports):
        for r in per_case:
            where = f"rank {rank} {r['case']}"
            assert abs(r["split_loss"] - r["whole_loss"]) <= 1e-6, where
            assert r["grad_abs_max"] > 1e-3 and r["grad_diff"] <= 1e-6, f"{where}: {r['grad_diff']}"
            for key, value in r["whole_metrics"].items():
                assert abs(r["split_metrics"][key] - value) <= 1e-6, f"{where} {key}"
