"""reward room: rule scorers by data_source (reward models and remote rewards come later)."""
from harness.reward.rule_scorers import (UnknownScorerError, get_scorer, load_scorer, register_scorer,
                                         registered_sources, score)

__all__ = ["UnknownScorerError", "get_scorer", "load_scorer", "register_scorer", "registered_sources", "score"]
