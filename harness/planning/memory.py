"""Per-GPU memory of each role, itemised by kind, for one layout.

Trained models (actor, critic, SFT model) are modelled as `MegatronEngine` builds them
(harness/workers/megatron_engine.py): DDP with one flat gradient buffer in fp32
(`grad_reduce_in_fp32=True`), parameters moved into a flat buffer when the distributed optimizer is
on (padded for even sharding), Float16Module below fp32 with fp32 main parameters in the optimizer,
Adam's two fp32 moments. The peak of a training step is the largest of a few moments of the step
(the loss forward, the loss backward through the output layer, a layer's backward, the embedding's
backward, the optimizer step) on the worst pipeline stage and data-parallel rank.

Frozen models (reference, reward model) hold their weights and, while they score, one micro-batch's
forward. The rollout engine is SGLang's own accounting: `mem_fraction_static` of the GPU holds the
weights and the KV-cache pool; activations and CUDA graphs come on top (SGLang's reserve formula,
`srt/arg_groups/memory_hook.py`).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from harness.config.parallel import ParallelConfig
from harness.models.hf_config import ModelSpec
from harness.planning import activations as act
from harness.planning.cluster import GB, Kernels
from harness.planning.parameters import Param, chunk_parameters, total_parameters

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "float32": 4, "bfloat16": 2, "float16": 2}
KINDS = ("weights", "grads", "optimizer", "buffers", "activations", "logits", "temporaries", "inputs",
         "kv_cache", "engine_overhead", "process_overhead", "fragmentation")


@dataclass
class Breakdown:
    """Bytes by (role, kind) on one GPU; `notes` say which moment or rank the figures belong to."""

    items: Dict[Tuple[str, str], float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def add(self, role: str, kind: str, value: float) -> None:
        if value:
            self.items[(role, kind)] = self.items.get((role, kind), 0.0) + value

    def extend(self, other: "Breakdown") -> None:
        for (role, kind), value in other.items.items():
            self.add(role, kind, value)
        self.notes += other.notes

    def total(self, role: Optional[str] = None) -> float:
        return sum(v for (r, _), v in self.items.items() if role is None or r == role)

    def by_role(self) -> Dict[str, Dict[str, float]]:
        out: Dict[str, Dict[str, float]] = {}
        for (role, kind), value in sorted(self.items.items(), key=lambda kv: (kv[0][0], KINDS.index(kv[0][1]))):
            out.setdefault(role, {})[kind] = value
        return out

    def largest(self, count: int = 3) -> List[Tuple[str, str, float]]:
        ranked = sorted(self.items.items(), key=lambda kv: -kv[1])
        return [(role, kind, value) for (role, kind), value in ranked[:count]]


# ---- the flat DDP buffer and the distributed optimizer's shards -------------------------------------

@dataclass(frozen=True)
class BufferLayout:
    numel: int  # with padding
    main_per_rank: Tuple[int, ...]  # parameter elements each data-parallel rank's optimizer holds
    largest_piece: int  # the largest single parameter (shard) the fullest rank's optimizer updates

    @property
    def main_elements(self) -> int:
        return max(self.main_per_rank)


def buffer_layout(params: List[Param], dp: int, distributed_optimizer: bool) -> BufferLayout:
    """megatron-core's `_ParamAndGradBuffer` with one bucket (overlap_grad_reduce=False): parameters
    laid out last first, each started at a multiple of 64 elements and the bucket padded to a multiple
    of lcm(DP, 128) under the distributed optimizer, a shared embedding in a bucket of its own; each
    bucket is then split into DP equal ranges."""
    if not distributed_optimizer:
        numel = sum(p.numel for p in params)
        return BufferLayout(numel, (numel,) * dp, max((p.numel for p in params), default=0))
    divisor = math.lcm(dp, 128)
    buckets, ranges, start, bucket_start = [], [], 0, 0
    for param in reversed(params):
        if param.shared_embedding and start > bucket_start:
            start = _ceil_to(start, divisor)
            buckets.append((bucket_start, start))
            bucket_start = start
        start = _ceil_to(start, 64)
        ranges.append((start, start + param.numel))
        start += param.numel
        if param.shared_embedding:
            start = _ceil_to(start, divisor)
            buckets.append((bucket_start, start))
            bucket_start = start
    if start > bucket_start:
        buckets.append((bucket_start, _ceil_to(start, divisor)))
    numel = buckets[-1][1] if buckets else 0
    per_rank = [0] * dp
    largest = [0] * dp
    for lo, hi in buckets:
        shard = (hi - lo) // dp
        for rank in range(dp):
            a, b = lo + rank * shard, lo + (rank + 1) * shard
            for p_lo, p_hi in ranges:
                piece = min(b, p_hi) - max(a, p_lo)
                if piece > 0:
                    per_rank[rank] += piece
                    largest[rank] = max(largest[rank], piece)
    worst = max(range(dp), key=per_rank.__getitem__)
    return BufferLayout(numel, tuple(per_rank), largest[worst])


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ---- a trained model ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainedModel:
    """One trained model on its ranks: the actor, the critic or the SFT model."""

    role: str
    spec: ModelSpec
    parallel: ParallelConfig
    dtype: str
    micro_batch: int  # sequences per forward/backward
    seq_length: int  # padded tokens per sequence
    microbatches: int  # per optimizer step on one data-parallel rank (pipeline in-flight count)
    dp: int
    head: str = "lm"  # lm: megatron's cross entropy (SFT) | policy: RL log-probs + entropy | value
    input_bytes_per_token: float = 40.0  # the rank's share of the step's batch (ids, masks, advantages)
    step_tokens: int = 0  # tokens of that share (default: one micro-batch x microbatches)


def trained_model_memory(model: TrainedModel, kernels: Kernels) -> Breakdown:
    """Peak of one training step (forward, backward, optimizer) on the worst rank."""
    pp = model.parallel.pipeline_model_parallel_size
    results = [_stage_memory(model, kernels, stage) for stage in range(pp)]
    worst = max(results, key=lambda b: b.total())
    if pp > 1:
        worst.notes.append(f"{model.role}: pipeline stage {results.index(worst)} of {pp} is the fullest")
    return worst


def micro_shape(model: TrainedModel, sequences: Optional[int] = None) -> act.Shape:
    """One micro-batch of `model` (of `sequences` sequences: default its training micro-batch)."""
    p = model.parallel
    return act.Shape(sequences or model.micro_batch, model.seq_length, p.tensor_model_parallel_size,
                     p.sequence_parallel, DTYPE_BYTES[model.dtype])


def _stage_memory(model: TrainedModel, kernels: Kernels, stage: int) -> Breakdown:
    spec, p, role = model.spec, model.parallel, model.role
    tp, pp, vpp = p.tensor_model_parallel_size, p.pipeline_model_parallel_size, p.virtual_pipeline_model_parallel_size
    chunks = vpp or 1
    e = DTYPE_BYTES[model.dtype]
    shape = micro_shape(model)
    out = Breakdown()

    # Static: weights, fp32 gradient buffer, optimizer (main copies and Adam moments), shared buffers.
    chunk_params = [chunk_parameters(spec, tp, pp, vpp, stage, c, value_head=model.head == "value")
                    for c in range(chunks)]
    layouts = [buffer_layout(ps, model.dp, p.use_distributed_optimizer) for ps in chunk_params]
    numel = sum(layout.numel for layout in layouts)
    main = sum(layout.main_elements for layout in layouts)
    out.add(role, "weights", numel * e)
    out.add(role, "grads", numel * 4)
    out.add(role, "optimizer", main * (8 + (4 if e != 4 else 0)))
    out.add(role, "buffers", _global_buffer(spec, shape, kernels))

    # Activations kept per micro-batch on this stage, times the micro-batches in flight.
    layers_per_chunk = spec.num_layers // (pp * chunks)
    kept_per_layer, recompute_transient, stored_layers = _kept_per_layer(spec, shape, kernels, p, layers_per_chunk)
    per_chunk_mb = kept_per_layer * stored_layers + _p2p_bytes(spec, shape, stage, pp)
    in_flight = _in_flight(pp, vpp, stage, model.microbatches)
    activations = in_flight * per_chunk_mb
    out.add(role, "inputs", model.input_bytes_per_token * (model.step_tokens or shape.tokens * model.microbatches))

    params = [param for ps in chunk_params for param in ps]
    grad_bytes = {param.name: param.numel * e for param in params}
    tied_held = 0.0
    if spec.tie_word_embeddings and pp == 1 and model.head != "value":
        # The output layer's weight gradient waits in autograd's buffer until the embedding's backward
        # adds to it (one leaf used twice), so it is alive for the whole backward pass.
        tied_held = grad_bytes["embedding.word_embeddings.weight"]
    layer_grads = max((n for name, n in grad_bytes.items() if ".layers." in name), default=0.0)
    moments = {
        "layer backward": {"activations": activations + recompute_transient,
                           "temporaries": layer_grads + 2 * shape.norm_tokens * e * spec.hidden_size + tied_held},
    }
    last = stage == pp - 1
    if last:
        head_kept = act.head_kept_bytes(spec, shape, kernels, model.head)
        output_grad = grad_bytes.get("output_layer.weight") or grad_bytes.get("embedding.word_embeddings.weight", 0.0)
        moments["loss forward"] = {"activations": activations + head_kept,
                                   "logits": act.logits_forward_peak(spec, shape, model.head)}
        moments["loss backward"] = {"activations": activations + head_kept,
                                    **act.logits_backward_peak(spec, shape, model.head, output_grad)}
    if stage == 0:
        embedding = grad_bytes.get("embedding.word_embeddings.weight", 0.0)
        # Tied: autograd adds the embedding's gradient to the held one out of place (three at once).
        moments["embedding backward"] = {"temporaries": embedding + 2 * tied_held,
                                         "activations": (in_flight - 1) * per_chunk_mb}
    if kernels.comm == "gloo" and p.use_distributed_optimizer:
        # gloo's reduce-scatter packs the whole gradient buffer into a new tensor first.
        moments["gradient reduce-scatter"] = {"temporaries": numel * 4}
    moments["optimizer step"] = {"temporaries": _adam_temporaries(layouts, kernels, main)}
    name, moment = max(moments.items(), key=lambda kv: sum(kv[1].values()))
    for kind, value in moment.items():
        out.add(role, kind, value)
    out.notes.append(f"{role}: peak at the {name}")
    return out


def _kept_per_layer(spec, shape, kernels, parallel: ParallelConfig, layers: int):
    """(bytes kept per stored layer, extra alive while one checkpoint is recomputed, stored layers)."""
    granularity = parallel.recompute_granularity
    full = act.layer_bytes(spec, shape, kernels)
    if granularity == "selective":
        kept = act.layer_bytes(spec, shape, kernels, selective_recompute=True)
        transient = act.unfused_core_bytes(spec, shape) if kernels.attention == "unfused" else 0.0
        return kept, transient, layers
    if granularity == "full":
        group = min(parallel.recompute_num_layers or 1, layers)
        if parallel.recompute_method == "block":  # the first `group` layers recomputed, the rest kept
            checkpoint_inputs = group * act.layer_input_bytes(spec, shape)
            return full, checkpoint_inputs + full, layers - group
        checkpoints = -(-layers // group)
        # Each checkpoint keeps its input; one group of layers is rebuilt at a time in the backward.
        return act.layer_input_bytes(spec, shape), group * full, checkpoints
    return full, 0.0, layers


def _p2p_bytes(spec, shape, stage: int, pp: int) -> float:
    """Pipeline tensors the schedule keeps per micro-batch: a stage's received input (below fp32 the
    first norm keeps an fp32 copy instead) and its output (deallocate_pipeline_outputs=False)."""
    if pp == 1:
        return 0.0
    one = shape.norm_tokens * shape.dtype_bytes * spec.hidden_size
    received = one if stage > 0 and shape.dtype_bytes != 4 else 0.0
    sent = one if stage < pp - 1 else 0.0
    return received + sent


def _in_flight(pp: int, vpp: Optional[int], stage: int, microbatches: int) -> int:
    """Micro-batches (of one model chunk) whose activations a stage holds at once: megatron-core's
    warm-up count plus one (1F1B; interleaved: (pp - rank - 1) x 2 + (chunks - 1) x pp)."""
    if pp == 1:
        return 1
    if vpp is None:
        return min(pp - stage, microbatches)
    return min((pp - stage - 1) * 2 + (vpp - 1) * pp + 1, microbatches * vpp)


def _global_buffer(spec, shape, kernels) -> float:
    """megatron's global memory buffer ("mpu"), kept after first use and sized by its largest use: the
    attention scores of the unfused kernel, and the sequence-parallel all-gather of linear inputs."""
    q_heads = spec.num_attention_heads // shape.tp
    scores = shape.sequences * q_heads * shape.seq_length ** 2 if kernels.attention == "unfused" else 0
    gathered = shape.tokens * spec.hidden_size if shape.sequence_parallel and kernels.norm == "torch" else 0
    return max(scores, gathered) * shape.dtype_bytes


def _adam_temporaries(layouts: List[BufferLayout], kernels: Kernels, main: int) -> float:
    """torch's per-tensor AdamW (CPU) makes sqrt(v) / bias-correction for one parameter at a time (two
    fp32 tensors of it at once); the foreach version does it for all parameters of a group at once;
    apex/TE's fused Adam makes none."""
    if kernels.adam == "single_tensor":
        return 2 * 4 * max((layout.largest_piece for layout in layouts), default=0)
    if kernels.adam == "foreach":
        return 4 * main
    return 0.0


# ---- frozen models -----------------------------------------------------------------------------------

def frozen_weights(spec: ModelSpec, parallel: ParallelConfig, dtype: str, value_head: bool = False) -> float:
    """Weights of a model without gradients or optimizer (reference, reward model) on its fullest stage."""
    tp, pp, vpp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size, \
        parallel.virtual_pipeline_model_parallel_size
    per_stage = [sum(p.numel for c in range(vpp or 1) for p in chunk_parameters(spec, tp, pp, vpp, s, c, value_head))
                 for s in range(pp)]
    return max(per_stage) * DTYPE_BYTES[dtype]


def forward_only_peak(spec: ModelSpec, shape: act.Shape, kernels: Kernels, head: str) -> float:
    """A scoring forward (no graph kept): about one layer's tensors plus the head's logits set."""
    return act.layer_bytes(spec, shape, kernels) + act.logits_forward_peak(spec, shape, head)


# ---- the rollout engine (SGLang) ---------------------------------------------------------------------

@dataclass(frozen=True)
class RolloutShard:
    """One GPU of an SGLang server."""

    weights: float
    kv_pool: float  # what SGLang allocates for the KV cache: mem_fraction_static x GPU - weights
    kv_per_token: float  # bytes per cached token on this GPU
    engine_overhead: float  # activations, CUDA graphs, metadata: outside mem_fraction_static
    mem_fraction_static: float

    @property
    def tokens(self) -> int:
        return int(max(self.kv_pool, 0) // self.kv_per_token)


def rollout_kv_bytes_per_token(spec: ModelSpec, tp: int, dtype: str = "bf16") -> float:
    """SGLang's cell size: K and V of every layer; KV heads are replicated when TP exceeds them."""
    kv_heads = max(1, spec.num_query_groups // tp)
    return 2 * spec.num_layers * kv_heads * spec.kv_channels * DTYPE_BYTES[dtype]


def rollout_weight_bytes(spec: ModelSpec, tp: int, dtype: str = "bf16") -> float:
    """Weights per GPU of a TP=`tp` server: layers and vocabulary split over TP; norms replicated."""
    norms = (2 * spec.num_layers + 1) * spec.hidden_size
    return ((total_parameters(spec) - norms) / tp + norms) * DTYPE_BYTES[dtype]


def sglang_reserve_bytes(gpu_mem_gb: float, tp: int, sglang_options: Dict) -> float:
    """SGLang's own estimate of what lies outside `mem_fraction_static` (activations and CUDA graph
    buffers): 512 MB + 1.5 MB per chunked-prefill token (at least 2048) + TP/8 GB + 2 MB per CUDA-graph
    batch size; chunked_prefill_size and cuda_graph_max_bs default by GPU memory as SGLang's do."""
    default_chunk, default_bs = _sglang_defaults(gpu_mem_gb, tp)
    chunk = sglang_options.get("chunked_prefill_size") or default_chunk
    max_bs = sglang_options.get("cuda_graph_max_bs") or default_bs
    graphs = 0 if sglang_options.get("disable_cuda_graph") else 2 * max_bs
    megabytes = 512 + 1.5 * max(chunk, 2048) + tp / 8 * 1024 + graphs
    return megabytes * 2 ** 20


def _sglang_defaults(gpu_mem_gb: float, tp: int):
    mib = gpu_mem_gb * 1024
    if mib < 20 * 1024:
        return 2048, 8
    if mib < 35 * 1024:
        return 4096, 48 if tp < 4 else 160
    if mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def rollout_shard(spec: ModelSpec, tp: int, gpu_mem_gb: float, mem_fraction_static: Optional[float],
                  sglang_options: Dict, dtype: str = "bf16") -> RolloutShard:
    reserve = sglang_reserve_bytes(gpu_mem_gb, tp, sglang_options)
    total = gpu_mem_gb * GB
    fraction = mem_fraction_static if mem_fraction_static is not None else round((total - reserve) / total, 3)
    weights = rollout_weight_bytes(spec, tp, dtype)
    return RolloutShard(weights=weights, kv_pool=fraction * total - weights,
                        kv_per_token=rollout_kv_bytes_per_token(spec, tp, dtype), engine_overhead=reserve,
                        mem_fraction_static=fraction)
