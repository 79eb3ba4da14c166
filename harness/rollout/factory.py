"""The engine ``actor_rollout_ref.rollout.name`` selects (imports only the one it needs)."""
from harness.rollout.base import RolloutEngine
from harness.config.rollout import RolloutConfig


def make_engine(config: RolloutConfig) -> RolloutEngine:
    if config.name == "embedded":
        from harness.rollout.embedded_engine import EmbeddedEngine

        return EmbeddedEngine(config)
    from harness.rollout.sglang_engine import SGLangEngine

    return SGLangEngine(config)
