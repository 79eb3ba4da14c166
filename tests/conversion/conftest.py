"""Shared pieces of the conversion tests: tiny HF models on disk and the tools as functions."""
import importlib.util
from pathlib import Path

import pytest

from tests.support.tiny_hf import make_tiny_hf_model

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    """A tools/ script as a module, so tests call its main(argv) in-process (no start-up cost)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_hf_dir(tmp_path):
    """A factory: ``tiny_hf_dir("qwen2", tie=False)`` -> a saved tiny model (several shards)."""
    def make(arch: str, **kwargs) -> Path:
        directory = tmp_path / f"hf-{arch}"
        kwargs.setdefault("max_shard_size", "50KB")
        make_tiny_hf_model(arch, directory, **kwargs)
        return directory
    return make
