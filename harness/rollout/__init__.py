"""Rollout engines behind one interface: SGLang servers (production) and an in-process engine."""
from harness.rollout.base import (Completion, RolloutEngine, RolloutError, SamplingParams, TensorInfo,
                                  WeightMismatchError, WeightStream)
from harness.config.rollout import RolloutConfig
from harness.rollout.factory import make_engine

__all__ = ["Completion", "RolloutConfig", "RolloutEngine", "RolloutError", "SamplingParams", "TensorInfo",
           "WeightMismatchError", "WeightStream", "make_engine"]
