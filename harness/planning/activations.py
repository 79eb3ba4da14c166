"""Bytes that autograd keeps for one micro-batch, per transformer layer and for the LM head.

Each term names the tensor megatron-core (0.16 / 0.19) saves for the backward pass. Two kernel sets:

* unfused / torch (megatron's local layer spec: CPU, or CUDA without Transformer Engine), read off a
  saved-tensor dump and checked against measured peaks (benchmarks/planner_accuracy.py):
  torch's RMSNorm keeps its fp32 input copy, x*rsqrt (fp32) and rsqrt; the next linear keeps the
  norm output; core attention keeps q, k and v expanded to all query heads (GQA), the causal mask and
  the fp32 softmax (plus its bf16 cast); SwiGLU keeps fc1's output, gate and linear halves and their
  product.
* flash / fused (Transformer Engine): Korthikanti et al. 2022 (Table 2, the layout Megatron-LM's
  theoretical_memory_usage.py follows) adapted to RMSNorm, GQA, SwiGLU and flash attention (no
  [s, s] scores; the softmax statistics instead). Derived, not measured (no GPU at hand).

Sequence parallel divides the norm and residual tensors (and saved linear inputs) by TP; tensor
parallel divides heads and the MLP width.
"""
from dataclasses import dataclass

from harness.models.hf_config import ModelSpec


@dataclass(frozen=True)
class Shape:
    """One micro-batch on one rank."""

    sequences: int
    seq_length: int
    tp: int
    sequence_parallel: bool
    dtype_bytes: int

    @property
    def tokens(self) -> int:
        return self.sequences * self.seq_length

    @property
    def norm_tokens(self) -> float:
        """Tokens of the tensors sequence parallel splits over TP ranks."""
        return self.tokens / self.tp if self.sequence_parallel else self.tokens


def _heads(spec: ModelSpec, tp: int):
    return spec.num_attention_heads // tp, spec.num_query_groups // tp, spec.kv_channels


def norm_bytes(spec: ModelSpec, shape: Shape, kernels) -> float:
    """One RMSNorm and the input the following linear keeps."""
    h, e = spec.hidden_size, shape.dtype_bytes
    if kernels.norm == "fused":  # input, normalised output (for the GEMM), rsigma
        return shape.norm_tokens * (2 * e * h + 4)
    return shape.norm_tokens * (4 * h + 4 * h + 4 + e * h)


def attention_bytes(spec: ModelSpec, shape: Shape, kernels, selective_recompute: bool) -> float:
    """Core attention and the projections' saved inputs (norm excluded)."""
    q_heads, kv_heads, d = _heads(spec, shape.tp)
    e, tokens, s, b = shape.dtype_bytes, shape.tokens, shape.seq_length, shape.sequences
    qkv_storage = (q_heads + 2 * kv_heads) * d  # v is a view of linear_qkv's output
    context = tokens * e * q_heads * d  # linear_proj's input
    rope = 4 * s * d * e  # cos/sin for q and k, made per layer
    qk_norms = _qk_norm_bytes(spec, shape, kernels, qkv_kept=kernels.attention == "flash" or selective_recompute)
    if kernels.attention == "flash":
        # q, k after RoPE, the qkv output (v), the attention output and fp32 log-sum-exp per head.
        kept = tokens * (e * (q_heads * d + kv_heads * d + qkv_storage) + 4 * q_heads)
        return kept + context + rope + qk_norms
    if selective_recompute:  # the checkpoint keeps its inputs: q, k after RoPE, v (the qkv output)
        return tokens * e * (q_heads * d + kv_heads * d + qkv_storage) + context + rope + qk_norms
    return context + rope + qk_norms + unfused_core_bytes(spec, shape)


def _qk_norm_bytes(spec: ModelSpec, shape: Shape, kernels, qkv_kept: bool) -> float:
    """Qwen3's RMSNorm over each query and key head. q arrives as a copy, k as a view of linear_qkv's
    output: at fp32 torch's norm keeps that view (so the whole output), below fp32 its fp32 copy."""
    if not spec.qk_layernorm:
        return 0.0
    q_heads, kv_heads, d = _heads(spec, shape.tp)
    e, tokens = shape.dtype_bytes, shape.tokens
    if kernels.norm == "fused":  # Transformer Engine's norm keeps its input and rsigma
        return tokens * (e * q_heads * d + (0 if qkv_kept else e * kv_heads * d) + 4 * (q_heads + kv_heads))
    q = 4 * q_heads * d + 4 * q_heads * d + 4 * q_heads
    if e == 4:
        k_input = 0 if qkv_kept else e * (q_heads + 2 * kv_heads) * d
    else:
        k_input = 4 * kv_heads * d
    return tokens * (q + k_input + 4 * kv_heads * d + 4 * kv_heads)


def unfused_core_bytes(spec: ModelSpec, shape: Shape) -> float:
    """What megatron's unfused core attention keeps: q, k and v (repeated to every query head under
    GQA), the causal mask, the fp32 softmax and, below fp32, its cast to the compute dtype."""
    q_heads, kv_heads, d = _heads(spec, shape.tp)
    e, tokens, s, b = shape.dtype_bytes, shape.tokens, shape.seq_length, shape.sequences
    grouped = q_heads > kv_heads
    k = q_heads * d if grouped else kv_heads * d
    v = q_heads * d if grouped else (q_heads + 2 * kv_heads) * d
    probs = b * q_heads * s * s * (4 + (e if e != 4 else 0))
    return tokens * e * (q_heads * d + k + v) + s * s + probs


def mlp_bytes(spec: ModelSpec, shape: Shape, kernels) -> float:
    ffn, e = spec.ffn_hidden_size // shape.tp, shape.dtype_bytes
    if kernels.norm == "fused":  # fused SwiGLU keeps fc1's output; fc2 keeps its input
        return shape.tokens * e * 3 * ffn
    # fc1 output (gate and linear halves), linear half + offset, silu(gate), their product (fc2 input)
    return shape.tokens * e * 5 * ffn


def layer_bytes(spec: ModelSpec, shape: Shape, kernels, selective_recompute: bool = False) -> float:
    return (2 * norm_bytes(spec, shape, kernels) + attention_bytes(spec, shape, kernels, selective_recompute)
            + mlp_bytes(spec, shape, kernels))


def layer_input_bytes(spec: ModelSpec, shape: Shape) -> float:
    """The hidden states entering a layer (what full recompute keeps per checkpointed chunk)."""
    return shape.norm_tokens * shape.dtype_bytes * spec.hidden_size


def vocab_columns(spec: ModelSpec, tp: int) -> int:
    return spec.padded_vocab_size(tp) // tp


def head_kept_bytes(spec: ModelSpec, shape: Shape, kernels, head: str) -> float:
    """Saved by the final norm and the head for one micro-batch (logits excluded)."""
    kept = norm_bytes(spec, shape, kernels)
    if head == "value":  # the replicated value head keeps its input gathered over the sequence
        return kept + (shape.tokens - shape.norm_tokens) * shape.dtype_bytes * spec.hidden_size
    return kept + shape.tokens * 24  # targets (int64), their mask, per-token loss and statistics


def logits_forward_peak(spec: ModelSpec, shape: Shape, head: str) -> float:
    """Largest logits-sized set alive in the loss's forward: the logits in the compute dtype, their
    fp32 copy (the vocabulary-parallel cross entropy works in fp32, in place), and for the RL head the
    no-grad entropy's exp and exp*logits temporaries."""
    if head == "value":
        return 0.0
    per_token = vocab_columns(spec, shape.tp) * (shape.dtype_bytes + (4 if shape.dtype_bytes != 4 else 0))
    if head == "policy":
        per_token += vocab_columns(spec, shape.tp) * 8
    return shape.tokens * per_token


def logits_kept_bytes(spec: ModelSpec, shape: Shape, head: str) -> float:
    """The cross entropy's saved softmax (fp32), which its backward turns into the gradient in place."""
    return 0.0 if head == "value" else shape.tokens * vocab_columns(spec, shape.tp) * 4


def logits_backward_peak(spec: ModelSpec, shape: Shape, head: str, weight_grad: float) -> dict:
    """The loss gradient through the output layer, as kinds: first the fp32 gradient (the softmax,
    turned in place) with its cast to the compute dtype, then that cast with the output layer's input
    and weight gradients; whichever is larger."""
    e, tokens = shape.dtype_bytes, shape.tokens
    input_grad = tokens * e * spec.hidden_size
    if head == "value":
        return {"temporaries": input_grad + weight_grad}
    columns = vocab_columns(spec, shape.tp)
    fp32_grad = tokens * columns * 4
    cast = tokens * columns * e if e != 4 else 0.0
    cast_moment = fp32_grad + cast
    through_layer = (cast or fp32_grad) + input_grad + weight_grad
    if cast_moment >= through_layer:
        return {"logits": cast_moment}
    return {"logits": cast or fp32_grad, "temporaries": input_grad + weight_grad}
