"""Configs under configs/ loaded for the planner (paths filled in, never opened)."""
from pathlib import Path

from harness.config.loader import load_config
from harness.config.rl import RLConfig
from harness.config.sft import SFTConfig

REPO = Path(__file__).resolve().parents[2]


def rl_config(name: str, *overrides: str) -> RLConfig:
    return load_config(RLConfig, str(REPO / "configs" / name),
                       ["data.train_files=x", "actor_rollout_ref.model.path=x", *overrides])


def sft_config(name: str, *overrides: str) -> SFTConfig:
    return load_config(SFTConfig, str(REPO / "configs" / name),
                       ["data.train_files=x", "model.partial_pretrain=x", *overrides])
