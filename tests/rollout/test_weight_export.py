"""Megatron shards -> HF-named tensors, through the mapping, at TP=2 and PP=2 (no SGLang needed):
the in-process engine on rank 0 must end up with exactly the weights the actor holds."""
import pytest
import torch

from tests.support.tiny_hf import hf_state_dict, make_tiny_hf_model


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen2")
    make_tiny_hf_model("qwen2", directory, num_layers=2)
    return str(directory)


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_export_reproduces_hf_weights(rank_group, tiny_qwen2, tp, pp):
    results = rank_group.run("tests.rollout.rank_checks:export_into_embedded", timeout=180,
                             hf_dir=tiny_qwen2, tp=tp, pp=pp, scale=1.5)
    received, reference = results[0], hf_state_dict(tiny_qwen2)
    assert results[1] is None
    assert set(received) == set(reference)
    for name, tensor in reference.items():
        expected = tensor.float() if "norm" in name else tensor.float() * 1.5
        torch.testing.assert_close(received[name], expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_a_feeder_on_another_node_gets_the_same_weights(rank_group, tiny_qwen2, tp, pp):
    """Engines that only the ranks of their own node can reach: rank 0 relays every tensor to rank 1,
    which feeds its own engine; at PP=2 rank 1 is also the stage that sends its layers to rank 0."""
    results = rank_group.run("tests.rollout.rank_checks:export_into_embedded", timeout=180,
                             hf_dir=tiny_qwen2, tp=tp, pp=pp, scale=1.5, feeders=(0, 1))
    reference = hf_state_dict(tiny_qwen2)
    for received in results:
        assert set(received) == set(reference)
        for name, tensor in reference.items():
            expected = tensor.float() if "norm" in name else tensor.float() * 1.5
            torch.testing.assert_close(received[name], expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_failing_engine_leaves_no_rank_waiting(rank_group, tiny_qwen2, failing_rank):
    """The rank whose engine fails still takes its part in the relay: the other rank's engine gets
    every weight, and the failure is reported (within the bound, not after a collective's timeout)."""
    results = rank_group.run("tests.rollout.rank_checks:export_into_embedded", timeout=120,
                             hf_dir=tiny_qwen2, tp=1, pp=2, scale=1.5, feeders=(0, 1), failing_rank=failing_rank)
    assert results[failing_rank] == "raised: engine refused"
    received, reference = results[1 - failing_rank], hf_state_dict(tiny_qwen2)
    assert set(received) == set(reference)
