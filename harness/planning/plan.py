"""Evaluate a layout against a cluster.

`evaluate_rl(config, spec, cluster)` / `evaluate_sft(...)` read the layout, batch sizes and lengths of
an `RLConfig` / `SFTConfig` and return a `Plan`: whether it fits, the fullest GPU itemised by role
and kind, the reasons it does not fit, and the predicted step time.
"""
import copy
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from harness.config.parallel import ParallelConfig
from harness.config.rl import RLConfig
from harness.config.sft import SFTConfig
from harness.models.hf_config import ModelSpec
from harness.planning import memory as mem
from harness.planning import step_time as st
from harness.planning.activations import Shape
from harness.planning.cluster import GB, Cluster
from harness.planning.parameters import total_parameters

@dataclass
class Plan:
    fits: bool
    layout: dict
    per_gpu: mem.Breakdown  # the fullest GPU
    gpu_mem_gb: float
    reasons: List[str] = field(default_factory=list)
    step: Dict[str, float] = field(default_factory=dict)  # seconds by phase, tokens/s/GPU
    config: object = None  # the config this plan evaluated (a proposal's, ready to write)

    @property
    def per_gpu_gb(self) -> float:
        return self.per_gpu.total() / GB

    @property
    def step_seconds(self) -> float:
        return self.step.get("step_s", math.inf)


# ---- shared pieces --------------------------------------------------------------------------------

def _padded(length: int, multiple: int = 8) -> int:
    return -(-length // multiple) * multiple


def layout_text(parallel: ParallelConfig) -> str:
    text = f"TP={parallel.tensor_model_parallel_size} PP={parallel.pipeline_model_parallel_size}"
    if parallel.virtual_pipeline_model_parallel_size:
        text += f" VPP={parallel.virtual_pipeline_model_parallel_size}"
    return text


def _parallel_dict(parallel: ParallelConfig, dp: int, micro: int) -> dict:
    return {"tp": parallel.tensor_model_parallel_size, "pp": parallel.pipeline_model_parallel_size,
            "vpp": parallel.virtual_pipeline_model_parallel_size, "dp": dp,
            "sequence_parallel": parallel.sequence_parallel, "recompute": parallel.recompute_granularity,
            "distributed_optimizer": parallel.use_distributed_optimizer, "micro_batch": micro}


def _validity(spec: ModelSpec, parallel: ParallelConfig, what: str) -> List[str]:
    try:
        spec.validate_parallel(parallel)
    except ValueError as error:
        return [f"{what}: {error}"]
    return []


def over_memory_reason(breakdown: mem.Breakdown, gpu_mem_gb: float, where: str) -> str:
    """'actor optimizer 41.2 GB + actor activations 22.0 GB + 9.1 GB more = 72.3 GB > 64 GB at TP=4 PP=1'."""
    total = breakdown.total() / GB
    largest = breakdown.largest(3)
    shown = " + ".join(f"{role} {kind.replace('_', ' ')} {value / GB:.1f} GB" for role, kind, value in largest)
    rest = total - sum(value for _, _, value in largest) / GB
    more = f" + {rest:.1f} GB more" if rest >= 0.05 else ""
    return f"{shown}{more} = {total:.1f} GB > {gb_text(gpu_mem_gb)} GB {where}"


def gb_text(value: float) -> str:
    """80 -> '80', 79.6475 -> '79.6'."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _add_process(gpu: mem.Breakdown, part: mem.Breakdown, cluster: Cluster, role: str) -> None:
    gpu.extend(part)
    gpu.add(role, "process_overhead", cluster.process_overhead_gb * GB)
    gpu.add(role, "fragmentation", cluster.fragmentation * part.total())


def _with_forward_phase(trained: mem.Breakdown, role: str, forward_peak: float) -> None:
    """A forward-only pass (log-probs, values) of the same process replaces the training step's
    dynamic memory when it needs more."""
    dynamic_kinds = ("activations", "logits", "temporaries")
    dynamic = sum(trained.items.get((role, k), 0.0) for k in dynamic_kinds)
    if forward_peak > dynamic:
        for kind in dynamic_kinds:
            trained.items.pop((role, kind), None)
        trained.add(role, "activations", forward_peak)
        trained.notes = [n for n in trained.notes if not n.startswith(f"{role}: peak")]
        trained.notes.append(f"{role}: peak in a forward-only scoring pass")


# ---- RL --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RLShape:
    sequences: int  # per step
    seq_length: int  # padded
    prompt_mean: float
    response_mean: float
    dp: int
    train_gpus: int
    rollout_gpus: int


def _rl_shape(config: RLConfig, cluster: Cluster, assumptions: st.Assumptions) -> RLShape:
    data, rollout, trainer = config.data, config.actor_rollout_ref.rollout, config.trainer
    train_gpus = trainer.nnodes * trainer.n_gpus_per_node
    rollout_gpus = trainer.rollout_gpus_per_node if trainer.placement == "split" else train_gpus
    return RLShape(
        sequences=data.train_batch_size * rollout.n,
        seq_length=_padded(data.max_prompt_length + data.max_response_length),
        prompt_mean=data.max_prompt_length * assumptions.prompt_fill,
        response_mean=data.max_response_length * assumptions.response_fill,
        dp=train_gpus // config.actor_rollout_ref.actor.megatron.model_parallel_size,
        train_gpus=train_gpus, rollout_gpus=rollout_gpus)


def _rl_trained(config: RLConfig, spec: ModelSpec, shape: RLShape, critic: bool) -> mem.TrainedModel:
    section = config.critic if critic else config.actor_rollout_ref.actor
    parallel = section.megatron
    dp = shape.train_gpus // parallel.model_parallel_size
    micro = section.ppo_micro_batch_size_per_gpu
    mini_sequences = section.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n
    dtype = (config.critic.model.dtype if critic else config.actor_rollout_ref.model.dtype)
    rank_sequences = max(1, shape.sequences // dp)
    return mem.TrainedModel(
        role="critic" if critic else "actor", spec=spec, parallel=parallel, dtype=dtype, micro_batch=micro,
        seq_length=shape.seq_length, microbatches=max(1, mini_sequences // dp // micro), dp=dp,
        head="value" if critic else "policy", step_tokens=rank_sequences * shape.seq_length)


def _policy_process(config: RLConfig, spec: ModelSpec, shape: RLShape, cluster: Cluster) -> mem.Breakdown:
    actor = _rl_trained(config, spec, shape, critic=False)
    part = mem.trained_model_memory(actor, cluster.kernels)
    forward = mem.forward_only_peak(spec, mem.micro_shape(actor, actor.micro_batch), cluster.kernels, "policy")
    if config.uses_reference:
        ref_micro = config.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu
        part.add("reference", "weights", mem.frozen_weights(spec, actor.parallel, actor.dtype))
        forward = max(forward, mem.forward_only_peak(spec, mem.micro_shape(actor, ref_micro), cluster.kernels, "lm"))
    _with_forward_phase(part, "actor", forward)
    return part


def _value_processes(config: RLConfig, spec: ModelSpec, shape: RLShape, cluster: Cluster) -> List[Tuple[str, mem.Breakdown]]:
    parts = []
    if config.critic.enable:
        critic = _rl_trained(config, spec, shape, critic=True)
        part = mem.trained_model_memory(critic, cluster.kernels)
        _with_forward_phase(part, "critic", mem.forward_only_peak(spec, mem.micro_shape(critic, critic.micro_batch),
                                                                  cluster.kernels, "value"))
        parts.append(("critic", part))
    if config.reward_model.enable:
        rm = config.reward_model
        part = mem.Breakdown()
        part.add("reward_model", "weights", mem.frozen_weights(spec, rm.megatron, rm.model.dtype, value_head=True))
        rm_shape = Shape(rm.micro_batch_size_per_gpu, shape.seq_length, rm.megatron.tensor_model_parallel_size,
                         rm.megatron.sequence_parallel, mem.DTYPE_BYTES[rm.model.dtype])
        part.add("reward_model", "activations", mem.forward_only_peak(spec, rm_shape, cluster.kernels, "value"))
        parts.append(("reward_model", part))
    return parts


def _rollout(config: RLConfig, spec: ModelSpec, cluster: Cluster) -> mem.RolloutShard:
    rollout = config.actor_rollout_ref.rollout
    dtype = "bf16" if rollout.dtype in ("bfloat16", "bf16", "auto") else rollout.dtype
    return mem.rollout_shard(spec, rollout.tensor_model_parallel_size, cluster.gpu_mem_gb,
                             rollout.gpu_memory_utilization, rollout.sglang, dtype)


def _rollout_part(shard: mem.RolloutShard, cluster: Cluster) -> mem.Breakdown:
    part = mem.Breakdown()
    part.add("rollout", "weights", shard.weights)
    part.add("rollout", "kv_cache", max(shard.kv_pool, 0.0))
    part.add("rollout", "engine_overhead", shard.engine_overhead)
    part.add("rollout", "process_overhead", cluster.process_overhead_gb * GB)
    return part


def _rl_reasons(config: RLConfig, spec: ModelSpec, cluster: Cluster, shape: RLShape) -> List[str]:
    reasons = []
    arr, trainer = config.actor_rollout_ref, config.trainer
    actor = arr.actor.megatron
    reasons += _validity(spec, actor, "actor")
    if config.critic.enable:
        reasons += _validity(spec, config.critic.megatron, "critic")
    asked = shape.train_gpus + (shape.rollout_gpus if trainer.placement == "split" else 0)
    if asked != cluster.num_gpus:
        reasons.append(f"the config uses {asked} GPUs (trainer.nnodes x n_gpus_per_node"
                       f"{' + rollout_gpus_per_node' if trainer.placement == 'split' else ''}), the cluster has "
                       f"{cluster.num_gpus}")
    if trainer.n_gpus_per_node > cluster.gpus_per_node:
        reasons.append(f"trainer.n_gpus_per_node={trainer.n_gpus_per_node} > {cluster.gpus_per_node} GPUs per node")
    rollout = arr.rollout
    if rollout.name == "sglang":
        tp = rollout.tensor_model_parallel_size
        if spec.num_attention_heads % tp:
            reasons.append(f"rollout TP={tp} does not divide num_attention_heads={spec.num_attention_heads}")
        # One rollout worker launches every server on its own node.
        rollout_node = min(cluster.gpus_per_node, shape.rollout_gpus)
        if tp * rollout.num_servers > rollout_node:
            reasons.append(f"rollout {rollout.num_servers} server(s) x TP={tp} = {rollout.num_servers * tp} GPUs > "
                           f"{rollout_node}: the rollout worker runs all servers on one node"
                           f"{' (trainer.rollout_gpus_per_node)' if trainer.placement == 'split' else ''}")
        needed = config.data.max_prompt_length + config.data.max_response_length
        if rollout.max_model_len is not None and rollout.max_model_len < needed:
            reasons.append(f"rollout.max_model_len={rollout.max_model_len} < max_prompt_length + "
                           f"max_response_length = {needed}")
    for name, section in (("actor_rollout_ref.actor", arr.actor),) + ((("critic", config.critic),) if config.critic.enable else ()):
        dp = shape.train_gpus // section.megatron.model_parallel_size
        mini = section.ppo_mini_batch_size * rollout.n
        if mini % dp:
            reasons.append(f"{name}.ppo_mini_batch_size x rollout.n = {mini} sequences is not divisible by "
                           f"data-parallel size {dp}")
    return reasons


def _trainer_gpu(config: RLConfig, spec: ModelSpec, shape: RLShape, cluster: Cluster) -> mem.Breakdown:
    """The training processes on one GPU: the policy (actor + reference), critic, reward model."""
    trainer_gpu = mem.Breakdown()
    _add_process(trainer_gpu, _policy_process(config, spec, shape, cluster), cluster, "actor")
    for role, part in _value_processes(config, spec, shape, cluster):
        _add_process(trainer_gpu, part, cluster, role)
    return trainer_gpu


def _trainer_key(config: RLConfig, shape: RLShape) -> str:
    """What the training processes' memory depends on (proposals vary the rollout around it)."""
    arr = config.actor_rollout_ref
    return repr((arr.actor.megatron, arr.actor.ppo_micro_batch_size_per_gpu, arr.ref.log_prob_micro_batch_size_per_gpu,
                 config.critic.enable and (config.critic.megatron, config.critic.ppo_micro_batch_size_per_gpu),
                 shape, config.uses_reference))


def evaluate_rl(config: RLConfig, spec: ModelSpec, cluster: Cluster, assumptions: Optional[st.Assumptions] = None,
                cache: Optional[dict] = None) -> Plan:
    """`cache`: trainer breakdowns of earlier calls with the same spec and cluster (proposals)."""
    assumptions = assumptions or st.Assumptions()
    shape = _rl_shape(config, cluster, assumptions)
    reasons = _rl_reasons(config, spec, cluster, shape)
    arr = config.actor_rollout_ref
    cache = {} if cache is None else cache
    key = _trainer_key(config, shape)
    if key not in cache:
        cache[key] = _trainer_gpu(config, spec, shape, cluster)
    trainer_gpu = copy.deepcopy(cache[key])
    # On CPU SGLang sizes its KV pool by --max-total-tokens, not by a memory fraction: not modelled.
    uses_sglang = arr.rollout.name == "sglang" and cluster.device == "cuda"
    shard = _rollout(config, spec, cluster) if uses_sglang else None
    gpus = {"training GPU": trainer_gpu}
    if shard is not None:
        rollout_part = _rollout_part(shard, cluster)
        if config.trainer.placement == "colocate":
            shared = copy.deepcopy(trainer_gpu)
            shared.extend(rollout_part)
            gpus = {"training GPU with a rollout shard": shared}
        else:
            gpus["rollout GPU"] = rollout_part
        if shard.kv_pool <= 0:
            reasons.append(f"rollout weights {shard.weights / GB:.1f} GB per GPU leave no KV cache under "
                           f"mem_fraction_static={shard.mem_fraction_static:g} "
                           f"({shard.mem_fraction_static * cluster.gpu_mem_gb:.1f} GB)")
        elif shard.tokens < (arr.rollout.max_model_len or shape.seq_length):
            reasons.append(f"rollout KV cache holds {shard.tokens} tokens per server, fewer than one sequence "
                           f"({arr.rollout.max_model_len or shape.seq_length})")
    where = f"at actor {layout_text(arr.actor.megatron)}"
    if shard is not None:
        where += f", rollout TP={arr.rollout.tensor_model_parallel_size} x {arr.rollout.num_servers}"
    worst_name, worst = max(gpus.items(), key=lambda kv: kv[1].total())
    if cluster.enforce_memory:
        for name, gpu in gpus.items():
            if gpu.total() > cluster.gpu_mem_gb * GB:
                reasons.append(over_memory_reason(gpu, cluster.gpu_mem_gb, f"per {name} {where}"))
    worst.notes.append(f"fullest: {worst_name}")
    layout = {"placement": config.trainer.placement, "actor": _parallel_dict(arr.actor.megatron, shape.dp,
                                                                              arr.actor.ppo_micro_batch_size_per_gpu)}
    if config.critic.enable:
        layout["critic"] = _parallel_dict(config.critic.megatron,
                                          shape.train_gpus // config.critic.megatron.model_parallel_size,
                                          config.critic.ppo_micro_batch_size_per_gpu)
    layout["rollout"] = {"engine": arr.rollout.name, "tp": arr.rollout.tensor_model_parallel_size,
                         "servers": arr.rollout.num_servers,
                         "mem_fraction_static": shard.mem_fraction_static if shard else None,
                         "kv_tokens_per_server": shard.tokens if shard else None}
    layout["train_gpus"], layout["rollout_gpus"] = shape.train_gpus, (
        shape.rollout_gpus if config.trainer.placement == "split" else 0)
    plan = Plan(fits=not reasons, layout=layout, per_gpu=worst, gpu_mem_gb=cluster.gpu_mem_gb, reasons=reasons,
                config=config)
    if shard is not None and cluster.device == "cuda":
        plan.step = _rl_step_time(config, spec, cluster, shape, shard, assumptions)
    return plan


def _rl_step_time(config: RLConfig, spec: ModelSpec, cluster: Cluster, shape: RLShape, shard: mem.RolloutShard,
                  assumptions: st.Assumptions) -> Dict[str, float]:
    arr = config.actor_rollout_ref
    rollout = arr.rollout
    generation = st.generation_seconds(
        spec, cluster.gpu, sequences=shape.sequences, servers=rollout.num_servers,
        tp=rollout.tensor_model_parallel_size, prompt_tokens=shape.prompt_mean, response_tokens=shape.response_mean,
        max_response=config.data.max_response_length, kv_capacity_tokens=shard.tokens,
        client_in_flight=rollout.max_concurrency * rollout.batch_size, weight_bytes_per_gpu=shard.weights,
        kv_bytes_per_token_per_gpu=shard.kv_per_token, assumptions=assumptions)
    tokens = shape.sequences * shape.seq_length  # trained padded
    seconds = {"generation_s": generation.seconds}

    def phase(parallel: ParallelConfig, micro: int, mini: int, passes) -> float:
        dp = shape.train_gpus // parallel.model_parallel_size
        flops = sum(st.pass_flops(spec, shape.seq_length, p) for p in passes)
        return st.training_seconds(flops, shape.train_gpus, cluster.gpu, parallel.tensor_model_parallel_size,
                                   parallel.pipeline_model_parallel_size, parallel.virtual_pipeline_model_parallel_size,
                                   max(1, mini * rollout.n // dp // micro), assumptions)

    actor = arr.actor
    forward = [st.TrainPass(tokens, backward=False)]
    seconds["old_log_prob_s"] = phase(actor.megatron, actor.ppo_micro_batch_size_per_gpu, actor.ppo_mini_batch_size,
                                      forward)
    if config.uses_reference:
        seconds["ref_s"] = seconds["old_log_prob_s"]
    update = [st.TrainPass(tokens, backward=True, recompute=actor.megatron.recompute_granularity)] * actor.ppo_epochs
    seconds["update_actor_s"] = phase(actor.megatron, actor.ppo_micro_batch_size_per_gpu, actor.ppo_mini_batch_size,
                                      update)
    critic = config.critic
    if critic.enable:
        seconds["values_s"] = phase(critic.megatron, critic.ppo_micro_batch_size_per_gpu, critic.ppo_mini_batch_size,
                                    forward)
        seconds["update_critic_s"] = phase(
            critic.megatron, critic.ppo_micro_batch_size_per_gpu, critic.ppo_mini_batch_size,
            [st.TrainPass(tokens, backward=True, recompute=critic.megatron.recompute_granularity)] * critic.ppo_epochs)
    weight_bytes = total_parameters(spec) * 2
    seconds["update_weights_s"] = weight_bytes / GB / assumptions.sync_gb_per_s.get(rollout.weight_transport, 10.0)
    seconds["step_s"] = sum(seconds.values())
    useful = shape.sequences * (shape.prompt_mean + shape.response_mean)
    total_gpus = shape.train_gpus + (shape.rollout_gpus if config.trainer.placement == "split" else 0)
    seconds["tokens_per_s_per_gpu"] = useful / seconds["step_s"] / total_gpus
    seconds["generation_in_flight_per_server"] = generation.in_flight
    seconds["decode_step_ms"] = generation.step_ms
    return seconds


# ---- SFT -------------------------------------------------------------------------------------------

def _sft_model(config: SFTConfig, spec: ModelSpec, world: int) -> mem.TrainedModel:
    data, parallel = config.data, config.megatron
    dp = world // parallel.model_parallel_size
    seq = _padded(data.max_length, parallel.tensor_model_parallel_size if parallel.sequence_parallel else 1)
    if data.max_token_len_per_gpu:  # a token budget: as many longest sequences as it holds
        micro = max(1, data.max_token_len_per_gpu // seq)
    else:
        micro = data.micro_batch_size_per_gpu
    per_rank = max(1, data.train_batch_size // dp)
    return mem.TrainedModel(role="model", spec=spec, parallel=parallel, dtype=config.model.dtype, micro_batch=micro,
                            seq_length=seq, microbatches=max(1, per_rank // micro), dp=dp, head="lm",
                            input_bytes_per_token=28, step_tokens=per_rank * seq)


def evaluate_sft(config: SFTConfig, spec: ModelSpec, cluster: Cluster,
                 assumptions: Optional[st.Assumptions] = None) -> Plan:
    assumptions = assumptions or st.Assumptions()
    parallel = config.megatron
    reasons = _validity(spec, parallel, "megatron")
    world = cluster.num_gpus
    if world % parallel.model_parallel_size:
        reasons.append(f"{world} GPUs are not divisible by TP x PP = {parallel.model_parallel_size}")
        world = parallel.model_parallel_size
    model = _sft_model(config, spec, world)
    gpu = mem.Breakdown()
    _add_process(gpu, mem.trained_model_memory(model, cluster.kernels), cluster, "model")
    if config.data.train_batch_size % model.dp:
        reasons.append(f"data.train_batch_size={config.data.train_batch_size} is not divisible by data-parallel "
                       f"size {model.dp}")
    if cluster.enforce_memory and gpu.total() > cluster.gpu_mem_gb * GB:
        reasons.append(over_memory_reason(gpu, cluster.gpu_mem_gb, f"at {layout_text(parallel)}"))
    step = {}
    if cluster.device == "cuda":
        tokens = config.data.train_batch_size * model.seq_length
        flops = st.pass_flops(spec, model.seq_length, st.TrainPass(tokens, backward=True,
                                                                   recompute=parallel.recompute_granularity))
        seconds = st.training_seconds(flops, world, cluster.gpu, parallel.tensor_model_parallel_size,
                                      parallel.pipeline_model_parallel_size,
                                      parallel.virtual_pipeline_model_parallel_size, model.microbatches, assumptions)
        step = {"step_s": seconds, "tokens_per_s_per_gpu": tokens / seconds / world}
    return Plan(fits=not reasons, layout={"model": _parallel_dict(parallel, model.dp, model.micro_batch)},
                per_gpu=gpu, gpu_mem_gb=cluster.gpu_mem_gb, reasons=reasons, step=step, config=config)
