"""The in-process engine behind the rollout interface: generation with log-probs, teacher-forced
scores that agree with them, weight updates that are served, and refusal of mismatching weights."""
import pytest
import torch

from harness.rollout import RolloutConfig, SamplingParams, WeightMismatchError, WeightStream, make_engine
from tests.support.tiny_hf import hf_state_dict, make_tiny_hf_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen2")
    make_tiny_hf_model("qwen2", directory)
    return str(directory)


@pytest.fixture
def engine(model_dir):
    with make_engine(RolloutConfig(name="embedded", model_path=model_dir, dtype="float32")) as engine:
        yield engine


def test_generation_shapes_and_logprobs_match_teacher_forcing(engine):
    prompts = [[1, 2, 3], [7, 8, 9, 10, 11]]
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=1.0, seed=0), n=3)
    assert [c.prompt_index for c in completions] == [0, 0, 0, 1, 1, 1]
    for c in completions:
        assert len(c.token_ids) == len(c.logprobs) == 6 and c.finish_reason == "length"
        prompt = prompts[c.prompt_index]
        (scores,) = engine.score([prompt + c.token_ids])
        torch.testing.assert_close(torch.tensor(scores[len(prompt) - 1:]), torch.tensor(c.logprobs),
                                   atol=1e-4, rtol=0)


def test_batched_generation_equals_one_prompt_at_a_time(model_dir):
    """Prompts of different lengths share a left-padded batch: the padding changes nothing."""
    prompts = [[5 + i % 7] * (2 + 3 * i) for i in range(6)]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    results = {}
    for batch_size in (1, 64):
        with make_engine(RolloutConfig(name="embedded", model_path=model_dir, dtype="float32",
                                       batch_size=batch_size)) as engine:
            results[batch_size] = engine.generate(prompts, greedy, n=2)
    one, batched = results[1], results[64]
    assert [c.prompt_index for c in batched] == [i for i in range(6) for _ in range(2)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in one]
    for a, b in zip(one, batched):
        torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=1e-5, rtol=0)


def test_stop_token_ends_a_sample(engine):
    (greedy,) = engine.generate([[4, 5, 6]], SamplingParams(max_new_tokens=6, temperature=0.0))
    stop = greedy.token_ids[2]
    (stopped,) = engine.generate([[4, 5, 6]], SamplingParams(max_new_tokens=6, temperature=0.0,
                                                             stop_token_ids=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == greedy.token_ids[:greedy.token_ids.index(stop) + 1]


def test_update_weights_is_served_and_versioned(engine, model_dir):
    prompt = [[5, 6, 7, 8]]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    before = engine.generate(prompt, greedy)[0].token_ids
    changed = {n: t.float() * (1.0 if "norm" in n else 2.0) for n, t in hf_state_dict(model_dir).items()}
    engine.update_weights(WeightStream.from_state_dict(changed), version=7)
    after = engine.generate(prompt, greedy)[0]
    assert after.token_ids != before and after.weight_version == "7"
    assert engine.health() == {"healthy": True, "weight_version": "7"}


def test_mismatching_weights_are_refused_before_loading(engine, model_dir):
    weights = hf_state_dict(model_dir)
    original = engine.model.state_dict()["model.norm.weight"].clone()
    bad_shape = dict(weights, **{"model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)})
    bad_shape["model.norm.weight"] = torch.zeros_like(weights["model.norm.weight"])
    with pytest.raises(WeightMismatchError, match="model.layers.0.mlp.up_proj.weight"):
        engine.update_weights(WeightStream.from_state_dict(bad_shape), version=2)
    with pytest.raises(WeightMismatchError, match="model.layers.9.mlp.up_proj.weight"):
        engine.update_weights([("model.norm.weight", torch.zeros(64)),
                               ("model.layers.9.mlp.up_proj.weight", torch.zeros(96, 64))], version=2)
    torch.testing.assert_close(engine.model.state_dict()["model.norm.weight"], original)
    assert engine.weight_version is None
