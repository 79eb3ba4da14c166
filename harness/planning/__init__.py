"""Planning room: memory and step-time model of a layout (actor, reference, critic, rollout engine;
colocated or split), proposals and refusals. Pure functions over a ModelSpec, parallel sizes and a
cluster description (DESIGN.md)."""
from harness.planning.cluster import Cluster, cpu_cluster
from harness.planning.plan import Plan, evaluate_rl, evaluate_sft
from harness.planning.proposals import propose_rl, propose_sft

__all__ = ["Cluster", "Plan", "cpu_cluster", "evaluate_rl", "evaluate_sft", "propose_rl", "propose_sft"]
