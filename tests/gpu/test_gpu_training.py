"""GPU paths (skipped without CUDA): bf16 training through Float16Module + distributed optimizer,
checkpoint resume on the GPU, and which layer spec the platform picks."""
import math

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def single_rank():
    from harness.parallel import init_distributed

    init_distributed()  # a lone process: one-rank NCCL group
    yield
    torch.distributed.destroy_process_group()


def test_cpu_layer_stays_off_on_gpu():
    from harness.parallel import cpu_compat, platform

    assert not cpu_compat.needed() and not cpu_compat.installed()
    print(f"layer spec on this GPU: {platform.layer_spec_kind()}")


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_bf16_training_on_gpu(single_rank, arch):
    from harness.config import ParallelConfig
    from harness.models import load_model_spec
    from harness.parallel import destroy_model_parallel, initialize_model_parallel
    from harness.selfcheck import TINY_CONFIGS, full_weights, microbatches
    from harness.workers.megatron_engine import MegatronEngine, OptimConfig

    spec = load_model_spec(TINY_CONFIGS[arch])
    full = full_weights(spec, seed=3)
    initialize_model_parallel(ParallelConfig())
    try:
        engine = MegatronEngine(spec, ParallelConfig(), OptimConfig(lr=3e-3, clip_grad=1.0), params_dtype=torch.bfloat16)
        assert next(engine.chunks[0].parameters()).dtype == torch.bfloat16
        assert next(engine.chunks[0].parameters()).is_cuda
        engine.load_full_weights(full)
        batch = microbatches(spec, 0)
        losses = [engine.train_step(batch)["loss"] for _ in range(8)]
        print(f"{arch} bf16 losses on one batch: {[round(x, 4) for x in losses]}")
        assert all(math.isfinite(x) for x in losses)
        assert losses[-1] < losses[0] - 0.05, losses  # fits the repeated batch
    finally:
        destroy_model_parallel()


def test_checkpoint_resume_on_gpu(single_rank, tmp_path):
    from harness.checkpoint.torch_dist import load_checkpoint, save_checkpoint
    from harness.config import ParallelConfig
    from harness.models import load_model_spec
    from harness.parallel import destroy_model_parallel, initialize_model_parallel
    from harness.selfcheck import OPTIM, TINY_CONFIGS, full_weights, microbatches
    from harness.workers.megatron_engine import MegatronEngine

    spec = load_model_spec(TINY_CONFIGS["qwen3"])
    full = full_weights(spec, seed=4)

    def run(steps, load=False, save_after=None):
        initialize_model_parallel(ParallelConfig())
        try:
            engine = MegatronEngine(spec, ParallelConfig(), OPTIM)
            engine.load_full_weights(full)
            if load:
                load_checkpoint(str(tmp_path / "ckpt"), engine.chunks, engine.optimizer)
            losses = {}
            for step in steps:
                losses[step] = engine.train_step(microbatches(spec, step))["loss"]
                if step == save_after:
                    save_checkpoint(str(tmp_path / "ckpt"), engine.chunks, engine.optimizer)
            return losses
        finally:
            destroy_model_parallel()

    uninterrupted = run([0, 1, 2], save_after=0)
    resumed = run([1, 2], load=True)
    print(f"uninterrupted {uninterrupted} resumed {resumed}")
    for step in (1, 2):
        assert abs(resumed[step] - uninterrupted[step]) <= 1e-6
