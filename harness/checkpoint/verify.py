"""Logit parity of a Megatron checkpoint with its HF twin: the tools' ``--verify`` and the tests.

Both sides run in fp32 on the same token batch, whatever dtype the weights are stored in (the HF
model is loaded upcast, the Megatron model loads the checkpoint into fp32 parameters), so the only
differences left are kernel rounding (~1e-6 on tiny models).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class LogitComparison:
    max_abs_diff: float
    greedy_agreement: float  # fraction of positions whose argmax token agrees

    def __str__(self) -> str:
        return (f"max |logit difference| = {self.max_abs_diff:.3e}, "
                f"greedy-token agreement = {100 * self.greedy_agreement:.2f} %")


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> LogitComparison:
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {list(reference.shape)} vs {list(other.shape)}")
    diff = (reference.float() - other.float()).abs().max().item()
    agreement = (reference.argmax(-1) == other.argmax(-1)).float().mean().item()
    return LogitComparison(diff, agreement)


def sample_tokens(vocab_size: int, batch: int = 2, seq_len: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq_len), generator=generator)


def hf_logits(hf_path: str | Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(tokens).logits


def megatron_logits(model_chunks, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor | None:
    """Forward-only pass through megatron's pipeline schedule; the full logits (TP gathered,
    vocabulary padding dropped) on the last pipeline stage, None on the others."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    batch, seq_len = tokens.shape
    positions = torch.arange(seq_len).unsqueeze(0).expand(batch, -1)

    def forward_step(data_iterator, model):
        output = model(next(data_iterator), positions, None)
        return output, lambda out, non_loss_data=True: out

    for chunk in model_chunks:
        chunk.eval()
    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=[iter([tokens]) for _ in model_chunks],
            model=list(model_chunks),
            num_microbatches=1,
            seq_length=seq_len,
            micro_batch_size=batch,
            forward_only=True,
            collect_non_loss_data=True,
        )
    if not parallel_state.is_pipeline_last_stage():
        return None
    logits = outputs[0]
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    if tp_size > 1:
        shards = [torch.empty_like(logits) for _ in range(tp_size)]
        torch.distributed.all_gather(shards, logits.contiguous(),
                                     group=parallel_state.get_tensor_model_parallel_group())
        logits = torch.cat(shards, dim=-1)
    return logits[..., :vocab_size]


def megatron_checkpoint_logits(mcore_path: str | Path, spec, tokens: torch.Tensor, parallel=None):
    """Builds ``spec``'s model at ``parallel`` (default TP=1/PP=1) on this rank, loads the
    checkpoint, returns ``megatron_logits``. Needs the default process group; sets up and tears
    down megatron's model-parallel state."""
    from harness.checkpoint.torch_dist import load_checkpoint
    from harness.config.parallel import ParallelConfig
    from harness.models.builder import build_model
    from harness.parallel import destroy_model_parallel, initialize_model_parallel

    parallel = parallel or ParallelConfig()
    initialize_model_parallel(parallel)
    try:
        chunks = build_model(spec, parallel, params_dtype=torch.float32)
        load_checkpoint(mcore_path, chunks)
        return megatron_logits(chunks, tokens, spec.vocab_size)
    finally:
        destroy_model_parallel()


def verify_conversion(hf_path: str | Path, mcore_path: str | Path) -> LogitComparison:
    """HF logits vs the Megatron checkpoint's at TP=1/PP=1, in this process (a one-rank group)."""
    from harness.models.hf_config import load_model_spec
    from harness.parallel import init_distributed

    init_distributed()
    spec = load_model_spec(hf_path)
    tokens = sample_tokens(spec.vocab_size)
    reference = hf_logits(hf_path, tokens)
    return compare_logits(reference, megatron_checkpoint_logits(mcore_path, spec, tokens))


def report_verification(hf_path: str | Path, mcore_path: str | Path,
                        tolerance: float | None = None) -> int:
    """The tools' ``--verify``: prints the comparison; 0 within ``tolerance``, 1 beyond it."""
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    comparison = verify_conversion(hf_path, mcore_path)
    print(f"verify: {comparison} (tolerance {tolerance:g})")
    if not comparison.max_abs_diff <= tolerance:
        print("error: logits differ beyond the tolerance", file=sys.stderr)
        return 1
    return 0
