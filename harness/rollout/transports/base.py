"""A weight transport moves buckets of HF-named tensors into running SGLang servers.

The engine drives it inside SGLang's weight-update session (pause -> flush -> begin -> open ->
send per bucket -> close -> end -> continue); a transport only moves bytes and checks every answer.
Transports are looked up by the config's ``weight_transport`` name.
"""
from __future__ import annotations

import abc
from typing import Callable, Dict, List, Sequence

import torch

from harness.rollout.base import NamedTensor
from harness.config.rollout import RolloutConfig
from harness.rollout.sglang_client import SGLangClient

TRANSPORTS: Dict[str, type] = {}


def register_transport(name: str) -> Callable[[type], type]:
    def register(cls):
        TRANSPORTS[name] = cls
        cls.name = name
        return cls
    return register


def make_transport(name: str, config: RolloutConfig) -> "WeightTransport":
    try:
        return TRANSPORTS[name](config)
    except KeyError:
        raise ValueError(f"actor_rollout_ref.rollout.weight_transport={name!r}: "
                         f"registered transports are {sorted(TRANSPORTS)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class WeightTransport(abc.ABC):
    name = ""

    def __init__(self, config: RolloutConfig):
        self.config = config

    def open(self, servers: Sequence[SGLangClient], tp_sizes: Sequence[int], version: str) -> None:
        """Start one sync to ``servers`` (each with its engine TP size)."""
        self.servers, self.tp_sizes = list(servers), list(tp_sizes)

    @abc.abstractmethod
    def send(self, bucket: List[NamedTensor], version: str) -> None:
        """Deliver one bucket; returns when every server has answered success for it."""

    def close(self, version: str) -> None:
        """Finish the sync (after the last bucket)."""

    def reset(self) -> None:
        """Forget connections to servers (one failed or was restarted)."""
