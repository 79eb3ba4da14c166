"""Test support: whether SGLang's venv exists, and a tiny bf16 Qwen2 directory SGLang can serve."""
import os

import pytest
import torch

from harness.config.rollout import default_sglang_python

SGLANG_PYTHON = default_sglang_python()
requires_sglang = pytest.mark.skipif(
    not os.path.exists(SGLANG_PYTHON),
    reason=f"SGLang's venv is not built ({SGLANG_PYTHON} missing): run `bash tools/setup_sglang_env.sh`")


def make_served_model(directory) -> str:
    from tests.support.tiny_hf import make_tiny_hf_model

    make_tiny_hf_model("qwen2", directory, dtype=torch.bfloat16)
    return str(directory)
