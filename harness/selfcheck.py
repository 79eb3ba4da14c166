"""Checks that this installation trains identically in every parallel layout.

    torchrun --nproc_per_node 2 -m harness.selfcheck [--arch qwen2 ...] [--layouts tp2 pp2 ...]

For each architecture, a tiny model with the same full weights trains two distributed-optimizer steps
at TP=1/PP=1 (the reference) and at TP=2, PP=2, TP=2 + sequence parallel and PP=2 x virtual PP=2;
losses and full (gathered) gradients must match the reference. Rank 0 prints one line per layout;
the exit status is non-zero on any mismatch. Runs on CPU (gloo) and on GPUs (NCCL).
"""
import argparse
import sys

import torch

from harness.config import ParallelConfig
from harness.models import load_model_spec
from harness.models.sharding import gather_full, global_names
from harness.parallel import destroy_model_parallel, device, init_distributed, initialize_model_parallel
from harness.workers.megatron_engine import MegatronEngine, OptimConfig, reduce_loss

# Tiny HF configs (as config.json holds them), shaped to exercise the layout code: GQA (8 heads, 2 KV
# heads), a vocabulary that needs padding (250 -> 256), Qwen2's q/k/v biases, Qwen3's QK norms with
# head_dim != hidden / heads and tied embeddings, Llama 3.1's rope scaling with non-default factors,
# and 4 layers so PP=2 x VPP=2 has one layer per virtual stage.
_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=8,
    num_key_value_heads=2,
    num_hidden_layers=4,
    vocab_size=250,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    rope_theta=10000.0,
)

TINY_CONFIGS = {
    "qwen2": dict(_COMMON, architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=False),
    "qwen3": dict(
        _COMMON, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32, tie_word_embeddings=True
    ),
    "llama": dict(
        _COMMON,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        tie_word_embeddings=False,
        rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64
        ),
    ),
}

SEQ, MICRO_BATCH, MICROBATCHES, STEPS = 16, 2, 4, 2
OPTIM = OptimConfig(lr=1e-3, weight_decay=0.01, clip_grad=1.0)


def full_weights(spec, seed: int):
    """Deterministic full (TP1/PP1) weights: names and shapes from a TP1 model, values from a seed."""
    initialize_model_parallel(ParallelConfig(), seed=seed)
    try:
        engine = MegatronEngine(spec, ParallelConfig(), OPTIM)
        generator = torch.Generator().manual_seed(seed)
        full = {}
        for local, name in global_names(engine.chunks[0]).items():
            shape = dict(engine.chunks[0].module.named_parameters())[local].shape
            noise = torch.randn(shape, generator=generator)
            full[name] = 1.0 + 0.1 * noise if name.endswith("layernorm.weight") else 0.05 * noise
        return full
    finally:
        destroy_model_parallel()


def microbatches(spec, step: int):
    generator = torch.Generator().manual_seed(1000 + step)
    batches = []
    for _ in range(MICROBATCHES):
        tokens = torch.randint(0, spec.vocab_size, (MICRO_BATCH, SEQ + 1), generator=generator)
        loss_mask = torch.ones(MICRO_BATCH, SEQ)
        loss_mask[:, : SEQ // 4] = 0  # a prompt part without loss, as in SFT
        batches.append(
            dict(
                tokens=tokens[:, :-1].contiguous(),
                labels=tokens[:, 1:].contiguous(),
                loss_mask=loss_mask,
                position_ids=torch.arange(SEQ).expand(MICRO_BATCH, SEQ).contiguous(),
            )
        )
    return batches


def train_and_record(spec, parallel, full, grads_before_reduction: bool):
    """Two optimizer steps; per step the mean loss and the full gradients this rank's stage holds.

    The TP1/PP1 reference runs data-parallel over both ranks with the same data on each, so its
    gradient before the DP reduction already equals the reduced one (and the distributed optimizer
    keeps only a shard of the reduced buffer); every other layout has DP=1 and is read after it."""
    initialize_model_parallel(parallel)
    try:
        engine = MegatronEngine(spec, parallel, OPTIM)
        engine.load_full_weights(full)
        losses, grads, grad_norms = [], [], []
        for step in range(STEPS):
            outputs = engine.forward_backward(microbatches(spec, step), finalize_grads=False)
            if grads_before_reduction:
                grads.append(gather_full(engine.chunks, lambda p: p.main_grad, engine.mapping))
            engine.finalize_grads()
            if not grads_before_reduction:
                grads.append(gather_full(engine.chunks, lambda p: p.main_grad, engine.mapping))
            grad_norms.append(engine.optimizer_step()["grad_norm"])
            losses.append(reduce_loss(outputs))
        return losses, grads, grad_norms
    finally:
        destroy_model_parallel()


LAYOUTS = {
    "tp2": ParallelConfig(tensor_model_parallel_size=2),
    "pp2": ParallelConfig(pipeline_model_parallel_size=2),
    "tp2_sp": ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True),
    "pp2_vpp2": ParallelConfig(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2),
    "tp2_full_recompute": ParallelConfig(tensor_model_parallel_size=2, recompute_granularity="full"),
    "tp2_sp_selective_recompute": ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True,
                                                 recompute_granularity="selective"),
    "tp2_plain_optimizer": ParallelConfig(tensor_model_parallel_size=2, use_distributed_optimizer=False),
}


def layout_parity(arch: str, layouts=tuple(LAYOUTS)):
    """For each layout: max |loss - reference| and max |grad - reference| over both steps."""
    spec = load_model_spec(TINY_CONFIGS[arch])
    full = full_weights(spec, seed=7)
    ref_losses, ref_grads, ref_norms = train_and_record(spec, ParallelConfig(), full, grads_before_reduction=True)
    report = {"reference_losses": ref_losses, "all_params": sorted(full)}
    for name in layouts:
        losses, grads, norms = train_and_record(spec, LAYOUTS[name], full, grads_before_reduction=False)
        diffs = {(s, k): (grads[s][k] - ref_grads[s][k]).abs().max().item() for s in range(STEPS) for k in grads[s]}
        worst = max(diffs, key=diffs.get)
        report[name] = dict(
            losses=losses,
            loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)),
            grad_diff=diffs[worst],
            worst_grad=f"step {worst[0] + 1}: {worst[1]}",
            grad_norm_diff=max(abs(a - b) for a, b in zip(norms, ref_norms)),
            compared=sorted(grads[0]),
            loss_changed=abs(losses[1] - losses[0]),
        )
    return report



TOLERANCE = 1e-5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(TINY_CONFIGS), choices=list(TINY_CONFIGS))
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    args = parser.parse_args(argv)
    init_distributed()
    if torch.distributed.get_world_size() != 2:
        raise SystemExit("harness.selfcheck needs exactly 2 ranks: torchrun --nproc_per_node 2 -m harness.selfcheck")
    rank0 = torch.distributed.get_rank() == 0
    failed = []
    for arch in args.arch:
        report = layout_parity(arch, tuple(args.layouts))
        for name in args.layouts:
            r = report[name]
            # Each pipeline stage compared its own parameters: take the worst over all ranks.
            worst = torch.tensor([r["loss_diff"], r["grad_diff"]], dtype=torch.float64, device=device())
            torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
            loss_diff, grad_diff = worst.tolist()
            ok = loss_diff <= TOLERANCE and grad_diff <= TOLERANCE
            failed += [] if ok else [f"{arch}/{name}"]
            if rank0:
                print(
                    f"{arch:6s} {name:26s} loss_diff={loss_diff:.2e} grad_diff={grad_diff:.2e} {'ok' if ok else 'MISMATCH'}",
                    flush=True,
                )
    torch.distributed.destroy_process_group()
    if rank0:
        print("all layouts match TP=1/PP=1" if not failed else f"mismatch: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
