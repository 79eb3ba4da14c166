"""``python -m harness.algorithms``: list every registered name, one kind per line."""
from . import (ADV_ESTIMATORS, AGGREGATION_MODES, KL_CONTROLLERS, KL_ESTIMATORS, MISMATCH_CORRECTIONS,
               POLICY_LOSSES)

KINDS = {
    "estimators": ADV_ESTIMATORS,
    "policy_losses": POLICY_LOSSES,
    "kl_estimators": KL_ESTIMATORS,
    "kl_controllers": KL_CONTROLLERS,
    "aggregation_modes": AGGREGATION_MODES,
    "mismatch_corrections": MISMATCH_CORRECTIONS,
}


def listing() -> str:
    """Aliases are listed after the name they stand for: both are accepted in configs."""
    return "\n".join(f"{kind}: {', '.join(registry.accepted_names())}" for kind, registry in KINDS.items())


if __name__ == "__main__":
    print(listing())
