"""The planner's pure parts: hand-computed terms, validity of every proposal, and refusals that say
why in figures."""
import pytest

from harness.config.parallel import ParallelConfig
from harness.models import load_model_spec
from harness.planning import Cluster, evaluate_rl, propose_rl, propose_sft
from harness.planning.catalog import KNOWN_MODELS, known_model_config
from harness.planning.cluster import GB
from harness.planning.memory import (TrainedModel, buffer_layout, rollout_kv_bytes_per_token, rollout_shard,
                                     sglang_reserve_bytes, trained_model_memory)
from harness.planning.parameters import Param, total_parameters
from tests.planning.support import rl_config, sft_config

H100_32 = Cluster(num_gpus=32, gpu_mem_gb=80, gpus_per_node=8)


def spec_of(name):
    return load_model_spec(known_model_config(name))


def test_catalogue_matches_published_parameter_counts():
    published = {"Qwen2.5-0.5B": 0.49, "Qwen2.5-7B": 7.61, "Qwen2.5-32B": 32.76, "Qwen3-8B": 8.19,
                 "Qwen3-32B": 32.76, "Llama-3.1-8B": 8.03, "Llama-3.1-70B": 70.55}
    for name, billions in published.items():
        assert total_parameters(spec_of(name)) / 1e9 == pytest.approx(billions, abs=0.006), name
    assert known_model_config("Qwen/Qwen2.5-32B-Instruct") == KNOWN_MODELS["Qwen2.5-32B"]
    assert known_model_config("no-such-model") is None


def test_buffer_padding_and_shards_by_hand():
    # Reverse order: b (100 -> starts at 0), a (starts at 128 after 64-alignment), padded to lcm(2, 128).
    layout = buffer_layout([Param("a", 10), Param("b", 100)], dp=2, distributed_optimizer=True)
    assert layout.numel == 256
    assert layout.main_per_rank == (100, 10)  # rank 0: [0, 128) holds b; rank 1: [128, 256) holds a
    assert buffer_layout([Param("a", 10), Param("b", 100)], dp=2, distributed_optimizer=False).numel == 110


def test_rollout_terms_by_hand():
    spec = spec_of("Qwen2.5-32B")
    # K and V x 64 layers x (8 KV heads / TP 4) x head_dim 128 x 2 bytes.
    assert rollout_kv_bytes_per_token(spec, 4) == 2 * 64 * 2 * 128 * 2
    # TP 16 > 8 KV heads: SGLang replicates one head per GPU.
    assert rollout_kv_bytes_per_token(spec, 16) == 2 * 64 * 1 * 128 * 2
    # SGLang's reserve on an 80 GB GPU at TP 4: 512 + 1.5 x 8192 + 4/8 x 1024 + 2 x 512 MB.
    assert sglang_reserve_bytes(80, 4, {}) == (512 + 12288 + 512 + 1024) * 2 ** 20
    assert sglang_reserve_bytes(80, 4, {"chunked_prefill_size": 2048, "disable_cuda_graph": True}) == \
        (512 + 3072 + 512) * 2 ** 20
    shard = rollout_shard(spec, 4, 80, 0.5, {})
    assert shard.kv_pool == pytest.approx(0.5 * 80 * GB - shard.weights)
    assert shard.weights == pytest.approx(total_parameters(spec) * 2 / 4, rel=0.001)


def test_memory_falls_with_each_saving():
    spec = spec_of("Qwen2.5-7B")
    from harness.planning.cluster import TE_KERNELS

    def total(**parallel):
        dp = 8 // (parallel.get("tensor_model_parallel_size", 1) * parallel.get("pipeline_model_parallel_size", 1))
        model = TrainedModel("actor", spec, ParallelConfig(**parallel), "bf16", 2, 2048, 8, dp, head="policy")
        return trained_model_memory(model, TE_KERNELS).total()

    assert total(tensor_model_parallel_size=2) < total()
    assert total(tensor_model_parallel_size=2, sequence_parallel=True) < total(tensor_model_parallel_size=2)
    assert total(use_distributed_optimizer=True) < total(use_distributed_optimizer=False)
    assert total(recompute_granularity="full") < total(recompute_granularity="selective") <= total()
    # With flash attention selective recompute saves only the softmax statistics; unfused, the
    # [s, s] probabilities.
    from harness.planning.cluster import LOCAL_CUDA_KERNELS

    def unfused(**parallel):
        model = TrainedModel("actor", spec, ParallelConfig(**parallel), "bf16", 2, 2048, 8, 8, head="policy")
        return trained_model_memory(model, LOCAL_CUDA_KERNELS).total()

    assert unfused(recompute_granularity="selective") < unfused() - 10 * GB


def _assert_valid_rl(plan, spec, cluster):
    config = plan.config
    arr = config.actor_rollout_ref
    actor = arr.actor.megatron
    spec.validate_parallel(actor)  # heads, KV heads, MLP width, layers divide
    assert spec.padded_vocab_size(actor.tensor_model_parallel_size) % actor.tensor_model_parallel_size == 0
    dp = config.world_size // actor.model_parallel_size
    mini = arr.actor.ppo_mini_batch_size * arr.rollout.n
    assert mini % dp == 0 and (mini // dp) % arr.actor.ppo_micro_batch_size_per_gpu == 0
    assert config.data.train_batch_size % arr.actor.ppo_mini_batch_size == 0
    rollout = arr.rollout
    assert spec.num_attention_heads % rollout.tensor_model_parallel_size == 0
    assert rollout.tensor_model_parallel_size * rollout.num_servers <= cluster.gpus_per_node
    assert plan.fits and plan.per_gpu_gb <= cluster.gpu_mem_gb
    # The proposal is a config that loads and evaluates to the same verdict.
    again = evaluate_rl(config, spec, cluster)
    assert again.fits and again.per_gpu_gb == pytest.approx(plan.per_gpu_gb)


@pytest.mark.parametrize("placement", ["colocate", "split"])
def test_rl_proposals_are_valid_and_ranked(placement):
    spec = spec_of("Qwen2.5-32B")
    workload = "grpo_qwen2.5_32b_split.yaml" if placement == "split" else "grpo_qwen2.5_32b.yaml"
    proposals = propose_rl(rl_config(workload), spec, H100_32, placement)
    assert proposals.ranked, proposals.rejected
    for plan in proposals.ranked:
        _assert_valid_rl(plan, spec, H100_32)
        assert plan.config.trainer.placement == placement
    times = [plan.step_seconds for plan in proposals.ranked]
    assert times == sorted(times)
    # TP=1 cannot hold a 32B actor on 80 GB: rejected with figures.
    rejected = dict(proposals.rejected)
    assert "TP=1 PP=1" in rejected and "> 80 GB" in rejected["TP=1 PP=1"], rejected


def test_sft_proposals_are_valid():
    spec = spec_of("Qwen3-32B")
    config = sft_config("sft_qwen2.5_32b.yaml")
    proposals = propose_sft(config, spec, H100_32)
    assert proposals.ranked
    for plan in proposals.ranked:
        spec.validate_parallel(plan.config.megatron)
        dp = 32 // plan.config.megatron.model_parallel_size
        assert plan.config.data.train_batch_size % dp == 0 and plan.fits


def test_oversized_config_refused_with_figures():
    config = rl_config("grpo_qwen2.5_32b.yaml", "trainer.nnodes=1",
                       "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=1",
                       "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=1",
                       "actor_rollout_ref.actor.megatron.sequence_parallel=false")
    plan = evaluate_rl(config, spec_of("Qwen2.5-32B"), Cluster(num_gpus=8, gpu_mem_gb=80))
    assert not plan.fits
    reason = next(r for r in plan.reasons if "GB >" in r)
    # "actor grads 122.1 GB + ... = N GB > 80 GB per training GPU ... at actor TP=1 PP=1, rollout TP=8 x 1"
    assert "actor grads 122.1 GB" in reason and "> 80 GB" in reason and "at actor TP=1 PP=1" in reason, reason


def test_layout_and_batch_mismatches_are_reasons():
    spec = spec_of("Qwen2.5-32B")
    config = rl_config("grpo_qwen2.5_32b.yaml", "actor_rollout_ref.rollout.tensor_model_parallel_size=3",
                       "actor_rollout_ref.rollout.max_model_len=1024")
    reasons = " | ".join(evaluate_rl(config, spec, Cluster(num_gpus=16, gpu_mem_gb=80)).reasons)
    assert "rollout TP=3 does not divide num_attention_heads=40" in reasons
    assert "the config uses 32 GPUs" in reasons and "the cluster has 16" in reasons
    assert "rollout.max_model_len=1024 < max_prompt_length + max_response_length = 3072" in reasons
    odd = rl_config("grpo_qwen2.5_32b.yaml", "actor_rollout_ref.actor.ppo_mini_batch_size=3",
                    "data.train_batch_size=3", "actor_rollout_ref.rollout.n=1",
                    "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2")
    reasons = " | ".join(evaluate_rl(odd, spec, H100_32).reasons)
    assert "ppo_mini_batch_size x rollout.n = 3 sequences is not divisible by data-parallel size 2" in reasons


def test_default_rollout_fraction_is_sglangs():
    spec = spec_of("Qwen2.5-7B")
    shard = rollout_shard(spec, 1, 80, None, {})
    reserve = sglang_reserve_bytes(80, 1, {})
    assert shard.mem_fraction_static == round((80 * GB - reserve) / (80 * GB), 3)
    colocated = rl_config("grpo_qwen2.5_7b.yaml", "actor_rollout_ref.rollout.gpu_memory_utilization=null")
    plan = evaluate_rl(colocated, spec, Cluster(num_gpus=8, gpu_mem_gb=80))
    assert not plan.fits  # SGLang's default takes nearly the whole GPU: nothing is left for the trainer


def test_proposals_skip_layouts_the_batch_does_not_split_over():
    # 3 prompts x 8 samples = 24 sequences per optimizer step: DP=16 or 32 cannot take them.
    spec = spec_of("Qwen2.5-7B")
    workload = rl_config("grpo_qwen2.5_7b.yaml", "actor_rollout_ref.actor.ppo_mini_batch_size=3",
                         "data.train_batch_size=3", "data.max_response_length=512",
                         "actor_rollout_ref.rollout.max_model_len=1024")
    proposals = propose_rl(workload, spec, H100_32, "colocate")
    assert proposals.ranked
    for plan in proposals.ranked:
        _assert_valid_rl(plan, spec, H100_32)
    rejected = dict(proposals.rejected)
    assert rejected["TP=1 PP=1"] == "data-parallel size 32 does not divide ppo_mini_batch_size x rollout.n = 24"
