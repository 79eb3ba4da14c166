"""A real SGLang server on CPU (one per module): generation with log-probs, weight sync from a
Megatron actor at TP=2 and PP=2 through each transport, bad input, a server killed mid-generation."""
import os
import signal
import stat
import threading
import time

import pytest
import torch

from harness.rollout import RolloutConfig, RolloutError, SamplingParams, WeightMismatchError, WeightStream
from harness.rollout.sglang_client import SGLangHTTPError
from harness.rollout.sglang_server import ServerStartError
from tests.rollout.sglang_support import make_served_model, requires_sglang
from tests.support.tiny_hf import hf_state_dict

pytestmark = requires_sglang
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
# bf16 serving vs the fp32 Megatron model: bf16 has 8 mantissa bits (relative step 2^-8 = 0.004) and
# the log-softmax of a 250-token vocabulary sums many such roundings.
LOGPROB_ATOL = 0.05


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_served_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def engine(model_dir, tmp_path_factory):
    from harness.rollout.sglang_engine import SGLangEngine

    config = RolloutConfig(model_path=model_dir, device="cpu", log_dir=str(tmp_path_factory.mktemp("logs")),
                           startup_timeout_s=240, request_timeout_s=120, max_retries=2)
    engine = SGLangEngine(config)
    yield engine
    engine.shutdown()
    assert not engine.servers[0].alive()


def test_generate_returns_tokens_logprobs_and_finish_reasons(engine):
    prompts = [[1, 2, 3], [10, 20, 30, 40]]
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=1.0, ignore_eos=True), n=3)
    assert [c.prompt_index for c in completions] == [0, 0, 0, 1, 1, 1]
    for c in completions:
        assert len(c.token_ids) == len(c.logprobs) == 5
        assert c.finish_reason == "length" and all(lp <= 0 for lp in c.logprobs)
    sample = completions[0]
    (scores,) = engine.score([prompts[0] + sample.token_ids])
    # Prefill (scoring) and decode (sampling) reduce in different orders in bf16.
    torch.testing.assert_close(torch.tensor(scores[2:]), torch.tensor(sample.logprobs), atol=0.01, rtol=0)


@pytest.mark.parametrize("transport,tp,pp", [("tensor", 2, 1), ("distributed", 2, 1), ("disk", 2, 1),
                                             ("tensor", 1, 2)])
def test_sync_from_megatron_is_served(rank_group, engine, model_dir, transport, tp, pp):
    step = int(time.time() * 1000)  # versions only advance, whichever test synced before
    outputs = {}
    for scale, version in ((1.0, step), (1.3, step + 1)):
        results = rank_group.run("tests.rollout.rank_checks:sync_into_sglang", timeout=300, url=engine.clients[0].url,
                                 hf_dir=model_dir, transport=transport, tp=tp, pp=pp, scale=scale, version=version)
        trainer, last_stage = results[0], results[-1]
        assert trainer["sglang_tokens"] == trainer["hf_tokens"]
        assert set(trainer["sglang_versions"]) == {str(version)}
        assert trainer["health"]["weight_version"] == str(version)
        for served, reference in zip(trainer["sglang_scores"], last_stage["megatron_scores"]):
            torch.testing.assert_close(torch.tensor(served), torch.tensor(reference), atol=LOGPROB_ATOL, rtol=0)
        outputs[scale] = trainer["sglang_tokens"]
    assert outputs[1.0] != outputs[1.3]


def test_mismatching_weights_are_refused_before_loading(engine, model_dir):
    before = engine.generate([[5, 6, 7]], GREEDY)[0]
    weights = hf_state_dict(model_dir)
    weights["model.norm.weight"] = torch.zeros_like(weights["model.norm.weight"])
    weights["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(3, 64)
    with pytest.raises(WeightMismatchError, match=r"model\.layers\.1\.self_attn\.q_proj\.weight"):
        engine.update_weights(WeightStream.from_state_dict(weights), version="bad")
    with pytest.raises(WeightMismatchError, match=r"model\.layers\.7\.mlp\.up_proj\.weight"):
        engine.update_weights([("model.layers.7.mlp.up_proj.weight", torch.zeros(96, 64))], version="bad")
    after = engine.generate([[5, 6, 7]], GREEDY)[0]
    assert after.token_ids == before.token_ids and after.weight_version == before.weight_version


@pytest.mark.parametrize("transport", ["tensor", "distributed"])
def test_sglang_400_is_surfaced_and_no_data_is_sent(engine, transport):
    """Outside begin/end_weight_update SGLang answers 400; the trainer must not block broadcasting."""
    from harness.rollout.transports import make_transport

    sender = make_transport(transport, engine.config)
    sender.open(engine.clients, engine.tp_sizes, "outside-session")
    started = time.monotonic()
    with pytest.raises(SGLangHTTPError, match="begin_weight_update") as error:
        sender.send([("model.norm.weight", torch.ones(64, dtype=torch.bfloat16))], "outside-session")
    assert error.value.status == 400 and time.monotonic() - started < 30
    sender.reset()
    assert engine.health()["servers"][0]["weight_version"] != "outside-session"


def test_server_that_never_becomes_healthy_fails_with_its_log(tmp_path):
    from harness.rollout.sglang_server import SGLangServer

    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'loading a model that never loads'\nexec sleep 600\n")
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    server = SGLangServer(RolloutConfig(model_path=str(tmp_path), python=str(fake_python), device="cpu",
                                        log_dir=str(tmp_path)))
    server.start()
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="never loads"):
        server.wait_healthy(timeout_s=3)
    assert time.monotonic() - started < 15
    server.stop()
    assert not server.alive()


def test_killed_server_fails_generation_then_restarts_with_current_weights(engine, model_dir):
    weights = {n: t * (1.0 if "norm" in n else 0.8) for n, t in hf_state_dict(model_dir).items()}
    engine.update_weights(WeightStream.from_state_dict(weights), version="before-kill")
    expected = engine.generate([[5, 6, 7]], GREEDY)[0].token_ids
    failure = {}

    def long_generation():
        started = time.monotonic()
        try:
            engine.generate([[i, i + 1] for i in range(8)], SamplingParams(max_new_tokens=400, ignore_eos=True))
        except RolloutError as error:
            failure["error"] = error
        failure["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=long_generation)
    thread.start()
    time.sleep(2)
    os.kill(engine.servers[0].pid, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive(), "generation hung after the server was killed"
    assert "exited with code -9" in str(failure["error"])
    assert not engine.health()["healthy"]

    assert engine.restart_unhealthy(WeightStream.from_state_dict(weights)) == [0]
    assert engine.health()["servers"][0]["weight_version"] == "before-kill"
    assert engine.generate([[5, 6, 7]], GREEDY)[0].token_ids == expected


def test_router_in_front_of_the_server(engine):
    from harness.rollout.sglang_client import SGLangClient
    from harness.rollout.sglang_server import RouterProcess

    router = RouterProcess(engine.config, [engine.clients[0].url])
    router.start()
    try:
        router.wait_healthy(timeout_s=120)
        answer = SGLangClient(router.url).post("/generate", {"input_ids": [5, 6, 7],
                                                             "sampling_params": GREEDY.to_sglang()})
        assert answer["output_ids"] == engine.generate([[5, 6, 7]], GREEDY)[0].token_ids
    finally:
        router.stop()
    assert not router.alive()
