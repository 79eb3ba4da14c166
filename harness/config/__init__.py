"""Typed configs (dataclasses), YAML loading and dotted overrides, validated once at start."""
from harness.config.parallel import ParallelConfig

__all__ = ["ParallelConfig"]
