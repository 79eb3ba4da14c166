"""Measured vs predicted memory of one Megatron training step, on every rank of a group (or alone).

`measure_training_step` builds a `MegatronEngine` for an HF config dict at a parallel layout and
dtype, runs one warm-up step (so Adam's moments and megatron's buffers exist, as in any later step),
then measures the next step (forward, backward, optimizer): on CPU the peak of live tensor memory
(`LiveTensorMemory`), on CUDA `torch.cuda.max_memory_allocated`. `predict_training_step` is the
planner's figure for the same step on the fullest rank.
"""
import gc

from harness.config import ParallelConfig
from harness.models import load_model_spec

DTYPES = ("fp32", "bf16")
# The batch tensors the step gets per token: tokens, labels and positions (int64), loss mask (fp32).
INPUT_BYTES_PER_TOKEN = 28


def step_batches(spec, sequences: int, seq_length: int, microbatches: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(microbatches):
        tokens = torch.randint(0, spec.vocab_size, (sequences, seq_length + 1), generator=generator)
        batches.append(dict(tokens=tokens[:, :-1].contiguous(), labels=tokens[:, 1:].contiguous(),
                            loss_mask=torch.ones(sequences, seq_length),
                            position_ids=torch.arange(seq_length).expand(sequences, seq_length).contiguous()))
    return batches


def measure_training_step(hf_config: dict, parallel: dict, dtype: str, sequences: int, seq_length: int,
                          microbatches: int) -> dict:
    """{'start', 'forward_backward', 'optimizer', 'peak'} in bytes, on this rank."""
    import torch

    from harness.parallel import destroy_model_parallel, initialize_model_parallel
    from harness.workers.megatron_engine import MegatronEngine, OptimConfig, token_sum_lm_loss
    from tests.support.live_memory import CudaMemory, LiveTensorMemory

    spec = load_model_spec(hf_config)
    layout = ParallelConfig(**parallel)
    initialize_model_parallel(layout, seed=1)
    engine = None
    try:
        engine = MegatronEngine(spec, layout, OptimConfig(lr=1e-4),
                                params_dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype],
                                calculate_per_token_loss=True)
        engine.train_step(step_batches(spec, sequences, seq_length, microbatches, seed=0), token_sum_lm_loss)
        batches = [{k: v.to("cuda") for k, v in b.items()} if torch.cuda.is_available() else b
                   for b in step_batches(spec, sequences, seq_length, microbatches, seed=1)]
        with (CudaMemory() if torch.cuda.is_available() else LiveTensorMemory()) as memory:
            start = memory.current
            engine.forward_backward(batches, token_sum_lm_loss)
            memory.mark("forward_backward")
            engine.optimizer_step()
            memory.mark("optimizer")
        return dict(start=start, **memory.phases, peak=max(memory.phases.values()))
    finally:
        del engine
        destroy_model_parallel()
        gc.collect()


def predict_training_step(hf_config: dict, parallel: dict, dtype: str, sequences: int, seq_length: int,
                          microbatches: int, world_size: int, kernels=None):
    """The planner's Breakdown for the same step on its fullest rank."""
    from harness.planning.cluster import CPU_KERNELS
    from harness.planning.memory import TrainedModel, trained_model_memory

    layout = ParallelConfig(**parallel)
    model = TrainedModel("actor", load_model_spec(hf_config), layout, dtype, sequences, seq_length, microbatches,
                         dp=layout.data_parallel_size(world_size), head="lm",
                         input_bytes_per_token=INPUT_BYTES_PER_TOKEN)
    return trained_model_memory(model, kernels or CPU_KERNELS)
