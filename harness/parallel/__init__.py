"""Process groups, device choice and the CPU compatibility layer for megatron-core."""
from harness.parallel.process_groups import (
    destroy_model_parallel,
    device,
    free_port,
    init_distributed,
    initialize_model_parallel,
)

__all__ = ["destroy_model_parallel", "device", "free_port", "init_distributed", "initialize_model_parallel"]
