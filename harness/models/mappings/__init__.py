"""One declarative HF <-> Megatron table per architecture (keys: ``ModelSpec.architecture``)."""
from harness.models.mappings import llama, qwen2, qwen3

TABLES = {"llama": llama.TABLE, "qwen2": qwen2.TABLE, "qwen3": qwen3.TABLE}
