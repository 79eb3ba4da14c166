"""Megatron models from HF configs, and the HF<->Megatron parameter mapping per architecture."""
from harness.models.hf_config import SUPPORTED_ARCHITECTURES, ModelSpec, UnsupportedModelError, load_model_spec

__all__ = ["SUPPORTED_ARCHITECTURES", "ModelSpec", "UnsupportedModelError", "load_model_spec", "build_model"]


def __getattr__(name):
    # build_model pulls in torch and megatron-core; import it only when asked for.
    if name == "build_model":
        from harness.models.builder import build_model

        return build_model
    raise AttributeError(name)
