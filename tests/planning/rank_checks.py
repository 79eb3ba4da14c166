"""Checks that run on each rank of the 2-rank gloo group (tests/support/multirank.py)."""
from harness.config import ParallelConfig
from harness.models import load_model_spec
from harness.parallel import destroy_model_parallel, initialize_model_parallel


def parameters_and_buffers(hf_config: dict, parallel: dict, dtype: str = "bf16") -> dict:
    """What MegatronEngine really holds on this rank: parameters in order (names, sizes), the DDP
    buffers' padded sizes, and the elements this rank's optimizer keeps main copies of."""
    import torch

    from megatron.core import parallel_state

    from harness.workers.megatron_engine import MegatronEngine

    spec = load_model_spec(hf_config)
    layout = ParallelConfig(**parallel)
    initialize_model_parallel(layout)
    try:
        engine = MegatronEngine(spec, layout, params_dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
        chunks = []
        for chunk in engine.chunks:
            module = chunk.module.module if dtype != "fp32" else chunk.module  # DDP(Float16Module(GPTModel))
            chunks.append(dict(
                params=[(name, p.numel()) for name, p in module.named_parameters()],
                buffer_numel=sum(buffer.numel for buffer in chunk.buffers),
            ))
        main = 0
        for inner in getattr(engine.optimizer, "chained_optimizers", [engine.optimizer]):
            for group in inner.optimizer.param_groups:
                main += sum(p.numel() for p in group["params"])
        return dict(chunks=chunks, main_elements=main, stage=parallel_state.get_pipeline_model_parallel_rank(),
                    dp=parallel_state.get_data_parallel_world_size(), dp_rank=parallel_state.get_data_parallel_rank())
    finally:
        destroy_model_parallel()
