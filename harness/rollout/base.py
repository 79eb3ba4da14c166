"""The rollout engine interface shared by trainers and evaluation, and what generation returns.

Prompts and completions are token ids (RL needs exact tokens, no detokenize/retokenize round trip);
every completion carries the log-probability of each generated token under the weights that produced
it, and the weight version that served it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

from harness.models.named_tensors import NamedTensor, TensorInfo, WeightStream  # noqa: F401 (re-exported)


class RolloutError(RuntimeError):
    """A rollout engine could not do what was asked (the message says which server and why)."""


class WeightMismatchError(RolloutError):
    """A weight stream names a tensor the served model lacks, or gives it another shape."""


@dataclass(frozen=True)
class SamplingParams:
    """What verl calls ``actor_rollout_ref.rollout.{temperature,top_p,top_k,response_length}``."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_token_ids: Tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: Optional[int] = None

    def to_sglang(self) -> dict:
        params = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                  "top_p": self.top_p, "top_k": self.top_k, "ignore_eos": self.ignore_eos}
        if self.stop_token_ids:
            params["stop_token_ids"] = list(self.stop_token_ids)
        if self.seed is not None:
            params["sampling_seed"] = self.seed
        return params


@dataclass
class Completion:
    """One sample: ``prompt_index`` points into the prompts given to ``generate``."""

    prompt_index: int
    token_ids: list
    logprobs: list
    finish_reason: str  # "stop", "length" or "abort"
    weight_version: Optional[str] = None


Weights = Union[WeightStream, Iterable[NamedTensor]]


class RolloutEngine(abc.ABC):
    """Generation with per-token log-probs, weight updates, health and shutdown."""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
                 n: int = 1) -> list:
        """``n`` completions per prompt, prompt-major: completion ``i * n + j`` is sample j of
        prompt i."""

    @abc.abstractmethod
    def score(self, sequences: Sequence[Sequence[int]]) -> list:
        """Teacher-forced log-probs: for each sequence, log p(token_t | tokens_<t) for t >= 1."""

    @abc.abstractmethod
    def update_weights(self, weights: Weights, version: Union[int, str]) -> None:
        """Serve ``weights`` (HF names; all or a subset of the model) from now on, as ``version``."""

    @abc.abstractmethod
    def health(self) -> dict:
        """{"healthy": bool, "weight_version": str|None, ...engine-specific details}."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop serving; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def check_against(expected: dict, name: str, shape: Sequence[int]) -> None:
    """Raise naming the tensor when ``name``/``shape`` do not fit ``expected`` ({name: shape})."""
    if name not in expected:
        raise WeightMismatchError(f"weight {name!r} is not a parameter of the served model "
                                  f"(it has {len(expected)} tensors, e.g. {next(iter(expected), None)!r})")
    if tuple(shape) != tuple(expected[name]):
        raise WeightMismatchError(f"weight {name!r} has shape {tuple(shape)}, the served model's is "
                                  f"{tuple(expected[name])}")
