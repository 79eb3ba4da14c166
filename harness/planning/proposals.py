"""Propose the layouts that fit, ranked by the step-time model.

`propose_rl` / `propose_sft` try the TP / PP / recompute / micro-batch / rollout-TP / server /
mem_fraction_static combinations that are valid for the model and the workload's batch sizes, keep
the fastest of each distinct layout, and say for each TP x PP that never fits why (its smallest
variant's reason).
"""
import copy
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from harness.config.parallel import ParallelConfig
from harness.config.rl import RLConfig
from harness.config.sft import SFTConfig
from harness.models.hf_config import ModelSpec
from harness.planning import step_time as st
from harness.planning.cluster import Cluster
from harness.planning.plan import Plan, evaluate_rl, evaluate_sft, layout_text

# mem_fraction_static values tried for the rollout engine, largest (most KV cache) first.
ROLLOUT_FRACTIONS = (0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)


def _tp_choices(spec: ModelSpec, cluster: Cluster) -> List[int]:
    return [tp for tp in (1, 2, 4, 8) if tp <= cluster.gpus_per_node and not spec.num_query_groups % tp
            and not spec.num_attention_heads % tp and not spec.ffn_hidden_size % tp]


def _pp_choices(spec: ModelSpec) -> List[int]:
    return [pp for pp in (1, 2, 4, 8) if not spec.num_layers % pp]


def _parallel(tp: int, pp: int, recompute: Optional[str]) -> ParallelConfig:
    return ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, sequence_parallel=tp > 1,
                          recompute_granularity=recompute, use_distributed_optimizer=True)


@dataclass
class Proposals:
    ranked: List[Plan]  # fits, fastest first
    rejected: List[Tuple[str, str]]  # (layout, why), one per TP x PP that never fits


def propose_rl(config: RLConfig, spec: ModelSpec, cluster: Cluster, placement: str,
               assumptions: Optional[st.Assumptions] = None, keep: int = 5) -> Proposals:
    """Layouts of `config`'s workload (batch sizes, lengths, algorithm) on `cluster`."""
    assumptions = assumptions or st.Assumptions()
    if placement == "split":
        rollout_gpus = cluster.gpus_per_node  # one node: the rollout worker's
        train_gpus = cluster.num_gpus - rollout_gpus
        if train_gpus < 1:
            return Proposals([], [("split", f"{cluster.num_gpus} GPUs leave none for training after a rollout "
                                            f"node of {rollout_gpus}")])
    else:
        rollout_gpus, train_gpus = min(cluster.gpus_per_node, cluster.num_gpus), cluster.num_gpus
    nodes, per_node = (train_gpus // cluster.gpus_per_node, cluster.gpus_per_node) \
        if train_gpus >= cluster.gpus_per_node else (1, train_gpus)
    fitting, closest, cache = [], {}, {}
    for tp in _tp_choices(spec, cluster):
        for pp in _pp_choices(spec):
            if train_gpus % (tp * pp):
                continue
            for recompute in (None, "selective", "full"):
                for micro in (4, 2, 1):
                    for rollout_tp in [t for t in (1, 2, 4, 8) if t <= rollout_gpus and not spec.num_attention_heads % t]:
                        servers = rollout_gpus // rollout_tp
                        for fraction in ROLLOUT_FRACTIONS:
                            key = f"TP={tp} PP={pp}"
                            candidate = _rl_variant(config, nodes, per_node, placement, rollout_gpus, tp, pp, recompute,
                                                    micro, rollout_tp, servers, fraction)
                            if isinstance(candidate, str):
                                _keep_closest(closest, key, math.inf, candidate)
                                break
                            plan = evaluate_rl(candidate, spec, cluster, assumptions, cache)
                            if plan.fits:
                                fitting.append(plan)
                                break  # the largest fraction that fits: the most KV cache
                            _keep_closest(closest, key, plan.per_gpu_gb, plan.reasons[-1])
    return _ranked(fitting, closest, keep)


def _keep_closest(closest: Dict[str, Tuple[float, str]], key: str, size_gb: float, reason: str) -> None:
    if key not in closest or size_gb < closest[key][0]:
        closest[key] = (size_gb, reason)


def _rl_variant(config: RLConfig, nodes: int, per_node: int, placement: str, rollout_gpus: int, tp: int, pp: int,
                recompute, micro: int, rollout_tp: int, servers: int, fraction: float):
    """The config with this layout, or why the workload's batch sizes do not split over it."""
    dp = nodes * per_node // (tp * pp)
    mini_sequences = config.actor_rollout_ref.actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n
    if mini_sequences % dp:
        return f"data-parallel size {dp} does not divide ppo_mini_batch_size x rollout.n = {mini_sequences}"
    if (mini_sequences // dp) % micro:
        return f"micro-batch {micro} does not divide the {mini_sequences // dp} sequences per rank"
    variant = copy.deepcopy(config)
    arr = variant.actor_rollout_ref
    trainer = variant.trainer
    trainer.nnodes, trainer.n_gpus_per_node, trainer.placement = nodes, per_node, placement
    trainer.rollout_gpus_per_node = rollout_gpus
    arr.actor.megatron = _parallel(tp, pp, recompute)
    arr.ref.megatron = arr.actor.megatron
    arr.actor.ppo_micro_batch_size_per_gpu = micro
    arr.ref.log_prob_micro_batch_size_per_gpu = micro
    if variant.critic.enable:
        variant.critic.megatron = arr.actor.megatron
        variant.critic.ppo_micro_batch_size_per_gpu = micro
        if (variant.critic.ppo_mini_batch_size * arr.rollout.n) % dp:
            return f"data-parallel size {dp} does not divide critic.ppo_mini_batch_size x rollout.n"
    rollout = arr.rollout
    rollout.name = "sglang"
    rollout.tensor_model_parallel_size, rollout.num_servers = rollout_tp, servers
    rollout.gpu_memory_utilization = fraction
    # Enough requests in flight that the KV cache, not the client, bounds the batch.
    rollout.max_concurrency = max(rollout.max_concurrency,
                                  -(-variant.data.train_batch_size * rollout.n // rollout.batch_size))
    rollout.max_model_len = variant.data.max_prompt_length + variant.data.max_response_length
    return variant


def _ranked(fitting: List[Plan], closest: Dict[str, Tuple[float, str]], keep: int) -> Proposals:
    """The fastest plan of each distinct layout (training TP x PP, rollout TP x servers), fastest
    first; the TP x PP that never fit, each with the reason of its smallest variant."""
    fitting.sort(key=lambda plan: (plan.step_seconds, plan.per_gpu_gb))
    best, fitting_keys = {}, set()
    for plan in fitting:
        fitting_keys.add(_layout_key(plan, with_rollout=False))
        best.setdefault(_layout_key(plan, with_rollout=True), plan)
    rejected = [(key, reason) for key, (_, reason) in closest.items() if key not in fitting_keys]
    return Proposals(list(best.values())[:keep], rejected)


def _layout_key(plan: Plan, with_rollout: bool) -> str:
    layout = plan.layout.get("actor") or plan.layout["model"]
    key = f"TP={layout['tp']} PP={layout['pp']}"
    rollout = plan.layout.get("rollout")
    if with_rollout and rollout:
        key += f" rollout {rollout['tp']}x{rollout['servers']}"
    return key


def propose_sft(config: SFTConfig, spec: ModelSpec, cluster: Cluster,
                assumptions: Optional[st.Assumptions] = None, keep: int = 5) -> Proposals:
    fitting, closest = [], {}
    for tp in _tp_choices(spec, cluster):
        for pp in _pp_choices(spec):
            if cluster.num_gpus % (tp * pp):
                continue
            dp = cluster.num_gpus // (tp * pp)
            if config.data.train_batch_size % dp:
                _keep_closest(closest, f"TP={tp} PP={pp}", math.inf, f"data-parallel size {dp} does not divide "
                              f"data.train_batch_size={config.data.train_batch_size}")
                continue
            for recompute in (None, "selective", "full"):
                variant = copy.deepcopy(config)
                variant.megatron = _parallel(tp, pp, recompute)
                plan = evaluate_sft(variant, spec, cluster, assumptions)
                if plan.fits:
                    fitting.append(plan)
                    break
                _keep_closest(closest, layout_text(variant.megatron), plan.per_gpu_gb, plan.reasons[-1])
    return _ranked(fitting, closest, keep)
