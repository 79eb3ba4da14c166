"""reward room: rule scorers by data_source, user functions, remote HTTP rewards, bounded and isolated
(`RewardManager`); a Megatron reward model runs as a value-model worker (harness.workers)."""
from harness.reward.manager import RewardItem, RewardManager, RewardResult
from harness.reward.rule_scorers import (UnknownScorerError, get_scorer, load_scorer, register_scorer,
                                         registered_sources, score)

__all__ = ["RewardItem", "RewardManager", "RewardResult", "UnknownScorerError", "get_scorer", "load_scorer",
           "register_scorer", "registered_sources", "score"]
