"""The planner's memory figure for a training step is within 10 % of the measured peak of live
tensor memory (forward, backward, optimizer; tests/support/live_memory.py), at TP=1 (data parallel
over 2 ranks) and TP=2, fp32 and bf16, with and without the distributed optimizer; and its picture
of a rank (parameters in megatron's order, padded DDP buffers, optimizer shards) is megatron's own.
The ~0.5B Qwen2 cases run in benchmarks/planner_accuracy.py (10 GB of RAM each)."""
import pytest

from harness.config import ParallelConfig
from harness.models import load_model_spec
from harness.planning.memory import buffer_layout
from harness.planning.parameters import chunk_parameters
from harness.selfcheck import TINY_CONFIGS
from tests.support.training_memory import predict_training_step

TINY = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=128, intermediate_size=256,
            num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=4, vocab_size=1000,
            max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
SHAPE = dict(sequences=2, seq_length=128, microbatches=2)
TOLERANCE = 0.10


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("distributed_optimizer", [True, False])
def test_predicted_peak_within_ten_percent(rank_group, tp, dtype, distributed_optimizer):
    parallel = dict(tensor_model_parallel_size=tp, use_distributed_optimizer=distributed_optimizer)
    measured = rank_group.run("tests.support.training_memory:measure_training_step", timeout=240,
                              hf_config=TINY, parallel=parallel, dtype=dtype, **SHAPE)
    predicted = predict_training_step(TINY, parallel, dtype, world_size=2, **SHAPE)
    peak = max(m["peak"] for m in measured)
    ratio = predicted.total() / peak
    assert abs(ratio - 1) <= TOLERANCE, (f"predicted {predicted.total() / 2**20:.2f} MiB, measured "
                                         f"{peak / 2**20:.2f} MiB (ratio {ratio:.3f}): {predicted.by_role()}")
    # Activations are a real share of it, so the activation model is what is being checked.
    assert predicted.items[("actor", "activations")] > 0.3 * peak


LAYOUTS = {
    "tp1_dp2": dict(),
    "tp2_sp": dict(tensor_model_parallel_size=2, sequence_parallel=True),
    "pp2": dict(pipeline_model_parallel_size=2),
    "pp2_vpp2": dict(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_rank_parameters_buffers_and_shards_are_megatrons(rank_group, arch):
    config = TINY_CONFIGS[arch]
    spec = load_model_spec(config)
    for name, parallel in LAYOUTS.items():
        reports = rank_group.run("tests.planning.rank_checks:parameters_and_buffers", timeout=240,
                                 hf_config=config, parallel=parallel)
        layout = ParallelConfig(**parallel)
        for rank, report in enumerate(reports):
            where = f"{arch} {name} rank {rank}"
            main = 0
            for chunk, real in enumerate(report["chunks"]):
                params = chunk_parameters(spec, layout.tensor_model_parallel_size, layout.pipeline_model_parallel_size,
                                          layout.virtual_pipeline_model_parallel_size, report["stage"], chunk)
                assert [(p.name, p.numel) for p in params] == real["params"], where
                planned = buffer_layout(params, report["dp"], layout.use_distributed_optimizer)
                assert planned.numel == real["buffer_numel"], where
                main += planned.main_per_rank[report["dp_rank"]]
            assert main == report["main_elements"], where
