"""A converted checkpoint loads at TP=1, TP=2 and PP=2 and gives HF's logits; the weight-sync path
(TP gather + mapping) gives HF's tensors back bit for bit."""
import pytest
import torch

from harness.checkpoint.convert import hf_to_mcore
from harness.checkpoint.verify import compare_logits, hf_logits, sample_tokens
from tests.support.tiny_hf import hf_state_dict, make_tiny_hf_model

MODELS = [("qwen2", False), ("qwen3", True), ("llama", False)]
LAYOUTS = [(1, 1), (2, 1), (1, 2)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{arch: (hf dir, mcore dir, tokens, HF fp32 logits)}, converted once for the module."""
    models = {}
    for arch, tie in MODELS:
        root = tmp_path_factory.mktemp(arch)
        config, _ = make_tiny_hf_model(arch, root / "hf", tie=tie)
        # Vocabulary written in blocks of 19 rows (the last straddles the padding): loading
        # reassembles TP shards and stages from chunks that cut across them.
        hf_to_mcore(root / "hf", root / "mcore", vocab_block_bytes=19 * 64 * 4)
        tokens = sample_tokens(config.vocab_size, batch=2, seq_len=24)
        models[arch] = (root / "hf", root / "mcore", tokens, hf_logits(root / "hf", tokens))
    return models


@pytest.mark.parametrize("tp,pp", LAYOUTS, ids=[f"tp{t}-pp{p}" for t, p in LAYOUTS])
@pytest.mark.parametrize("arch", [arch for arch, _ in MODELS])
def test_megatron_logits_match_hf(rank_group, converted, arch, tp, pp):
    _, mcore_dir, tokens, reference = converted[arch]
    results = rank_group.run("tests.conversion.rank_checks:checkpoint_logits", timeout=180,
                             mcore_path=str(mcore_dir), tp=tp, pp=pp, tokens=tokens)
    logits = [r for r in results if r is not None]
    assert len(logits) == (2 if pp == 1 else 1)  # every rank of the last stage returns them
    for rank_logits in logits:
        comparison = compare_logits(reference, rank_logits)
        assert comparison.max_abs_diff < 1e-4, comparison
        assert comparison.greedy_agreement == 1.0, comparison


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["tp2", "pp2"])
@pytest.mark.parametrize("arch", [arch for arch, _ in MODELS])
def test_weight_sync_path_gives_hf_tensors_back(rank_group, converted, arch, tp, pp):
    hf_dir, mcore_dir, _, _ = converted[arch]
    results = rank_group.run("tests.conversion.rank_checks:exported_hf_tensors", timeout=180,
                             mcore_path=str(mcore_dir), hf_path=str(hf_dir), tp=tp, pp=pp)
    assert [wrong for _, wrong in results] == [[], []]
    exported = {}
    for rank_tensors, _ in results:
        exported.update(rank_tensors)
    original = hf_state_dict(hf_dir)
    assert sorted(exported) == sorted(original)
    assert all(torch.equal(exported[n], t) for n, t in original.items())


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["tp2", "pp2"])
@pytest.mark.parametrize("arch", [arch for arch, _ in MODELS])
def test_trainer_checkpoint_saved_at_tp_or_pp_converts_back_bit_identical(
        rank_group, converted, tmp_path, arch, tp, pp):
    from harness.checkpoint.convert import mcore_to_hf

    hf_dir, mcore_dir, _, _ = converted[arch]
    rank_group.run("tests.conversion.rank_checks:resave_at", timeout=180, mcore_path=str(mcore_dir),
                   save_to=str(tmp_path / "trainer"), tp=tp, pp=pp)
    mcore_to_hf(tmp_path / "trainer", tmp_path / "hf", hf_config=hf_dir)
    original, back = hf_state_dict(hf_dir), hf_state_dict(tmp_path / "hf")
    assert sorted(back) == sorted(original)
    assert all(torch.equal(back[n], t) for n, t in original.items())
