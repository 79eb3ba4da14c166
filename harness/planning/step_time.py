"""A first-order step-time model: training FLOPs at a stated MFU, decode bounded by HBM bandwidth.

Training: 6·N·tokens (N: non-embedding parameters plus the output layer) plus attention
(6·layers·heads·head_dim·seq per token for forward and backward over a causal mask), a forward more
under full recompute, the attention forward more under selective recompute; forward-only passes
(old log-probs, reference, values) 2·N·tokens plus attention. Sequences are trained padded to the
batch's longest (the harness does not pack yet). Time = FLOPs / (GPUs x peak x MFU) x the pipeline
bubble (1 + (PP - 1) / (micro-batches x VPP)) / a tensor-parallel efficiency.

Generation, per SGLang server: every decode step reads the server's weights and the KV cache of the
sequences in flight from HBM at a stated fraction of peak bandwidth; continuous batching runs
max(longest response, tokens to generate / sequences in flight) steps; prefill is compute-bound.
Weight sync moves the bf16 weights at a stated rate per transport.
"""
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

from harness.models.hf_config import ModelSpec
from harness.planning.cluster import GpuType
from harness.planning.parameters import non_embedding_parameters


@dataclass(frozen=True)
class Assumptions:
    train_mfu: float = 0.35  # Megatron dense bf16 training on H100 reaches 0.35-0.45 in published runs
    prefill_mfu: float = 0.40
    decode_bandwidth: float = 0.70  # achieved / peak HBM bandwidth in batched decode
    tp_efficiency_per_doubling: float = 0.03  # MFU / bandwidth lost per doubling of TP (communication)
    prompt_fill: float = 0.5  # mean prompt length / max_prompt_length
    response_fill: float = 0.8  # mean response length / max_response_length
    sync_gb_per_s: Dict[str, float] = field(default_factory=lambda: {"tensor": 25.0, "distributed": 10.0,
                                                                     "disk": 2.0})

    def as_dict(self) -> dict:
        return asdict(self)


def forward_flops_per_token(spec: ModelSpec, seq_length: int) -> float:
    """Forward FLOPs per token: the weight matrices (2 per parameter, output layer included) and the
    attention scores and values over a causal mask (mean context seq/2)."""
    output_layer = spec.vocab_size * spec.hidden_size
    attention = 2 * spec.num_layers * spec.num_attention_heads * spec.kv_channels * seq_length
    return 2 * (non_embedding_parameters(spec) + output_layer) + attention


def attention_forward_flops_per_token(spec: ModelSpec, seq_length: int) -> float:
    return 2 * spec.num_layers * spec.num_attention_heads * spec.kv_channels * seq_length


@dataclass(frozen=True)
class TrainPass:
    """One pass over `tokens` (padded) of a model: forward only, or forward and backward."""

    tokens: float
    backward: bool
    recompute: Optional[str] = None


def pass_flops(spec: ModelSpec, seq_length: int, step: TrainPass) -> float:
    forward = forward_flops_per_token(spec, seq_length) * step.tokens
    if not step.backward:
        return forward
    extra = 0.0
    if step.recompute == "full":
        extra = forward
    elif step.recompute == "selective":
        extra = attention_forward_flops_per_token(spec, seq_length) * step.tokens
    return 3 * forward + extra


def tp_efficiency(tp: int, assumptions: Assumptions) -> float:
    return max(0.5, 1 - assumptions.tp_efficiency_per_doubling * math.log2(tp))


def training_seconds(flops: float, gpus: int, gpu: GpuType, tp: int, pp: int, vpp: Optional[int],
                     microbatches: int, assumptions: Assumptions) -> float:
    mfu = assumptions.train_mfu * tp_efficiency(tp, assumptions)
    bubble = 1 + (pp - 1) / (max(microbatches, 1) * (vpp or 1))
    return flops / (gpus * gpu.bf16_tflops * 1e12 * mfu) * bubble


@dataclass(frozen=True)
class Generation:
    seconds: float
    in_flight: int  # sequences decoded together per server
    decode_steps: float
    step_ms: float


def generation_seconds(spec: ModelSpec, gpu: GpuType, *, sequences: int, servers: int, tp: int,
                       prompt_tokens: float, response_tokens: float, max_response: int, kv_capacity_tokens: int,
                       client_in_flight: int, weight_bytes_per_gpu: float, kv_bytes_per_token_per_gpu: float,
                       assumptions: Assumptions) -> Generation:
    per_server = math.ceil(sequences / servers)
    context = prompt_tokens + response_tokens
    by_memory = max(1, int(kv_capacity_tokens // max(context, 1)))
    in_flight = max(1, min(per_server, by_memory, max(1, client_in_flight // servers)))
    decode_steps = max(max_response, per_server * response_tokens / in_flight)
    mean_context = prompt_tokens + response_tokens / 2
    read = weight_bytes_per_gpu + in_flight * mean_context * kv_bytes_per_token_per_gpu
    memory_s = read / (gpu.hbm_tb_s * 1e12 * assumptions.decode_bandwidth * tp_efficiency(tp, assumptions))
    compute_s = 2 * non_embedding_parameters(spec) * in_flight / (tp * gpu.bf16_tflops * 1e12 * assumptions.prefill_mfu)
    step_s = max(memory_s, compute_s)
    prefill_s = (forward_flops_per_token(spec, int(prompt_tokens)) * per_server * prompt_tokens
                 / (tp * gpu.bf16_tflops * 1e12 * assumptions.prefill_mfu))
    return Generation(decode_steps * step_s + prefill_s, in_flight, decode_steps, step_s * 1e3)
