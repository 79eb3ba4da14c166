"""The planner's memory figure for one training step against the measured peak, per case.

    python benchmarks/planner_accuracy.py                  # small cases, then the ~0.5B Qwen2 layout
    python benchmarks/planner_accuracy.py --cases small    # or: large

A case is a Megatron training step (forward, backward, optimizer; after one warm-up step) of one
model at one layout: on CPU the peak of live tensor memory (a TorchDispatchMode counting unique
storages, tests/support/live_memory.py; not RSS), on CUDA torch.cuda.max_memory_allocated. The
prediction is `harness.planning` for the fullest rank. Prints predicted, measured and their ratio.
TP=1 cases of the small model run data-parallel over 2 ranks (so the distributed optimizer shards);
the large ones run TP=1 in one process (memory). The large cases need about 10 GB of RAM each.
"""
import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.support.multirank import RankGroup  # noqa: E402
from tests.support.training_memory import predict_training_step  # noqa: E402

TINY = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=128, intermediate_size=256,
            num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=4, vocab_size=1000,
            max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
TINY_QWEN3 = dict(TINY, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32, tie_word_embeddings=True)


def small_cases():
    shape = dict(sequences=2, seq_length=128, microbatches=2, world=2)
    cases = []
    for tp in (1, 2):
        for dtype in ("fp32", "bf16"):
            for distributed in (True, False):
                cases.append((f"tiny tp{tp} {dtype} {'distopt' if distributed else 'adam'}", TINY,
                              dict(tensor_model_parallel_size=tp, use_distributed_optimizer=distributed), dtype, shape))
    extra = [
        ("tiny tp2+sp bf16 distopt", TINY, dict(tensor_model_parallel_size=2, sequence_parallel=True), "bf16", shape),
        ("tiny pp2 bf16 distopt 4mb", TINY, dict(pipeline_model_parallel_size=2), "bf16", dict(shape, microbatches=4)),
        ("tiny tp2 bf16 selective", TINY, dict(tensor_model_parallel_size=2, recompute_granularity="selective"),
         "bf16", shape),
        ("tiny tp2 bf16 full recompute", TINY, dict(tensor_model_parallel_size=2, recompute_granularity="full"),
         "bf16", shape),
        ("tiny-qwen3 tp2 fp32 distopt", TINY_QWEN3, dict(tensor_model_parallel_size=2), "fp32", shape),
    ]
    return cases + extra


def large_cases():
    from harness.planning.catalog import known_model_config

    config = known_model_config("Qwen2.5-0.5B")
    cases = []
    for tp in (1, 2):
        for dtype in ("fp32", "bf16"):
            for distributed in (True, False):
                cases.append((f"qwen2.5-0.5b tp{tp} {dtype} {'distopt' if distributed else 'adam'}", config,
                              dict(tensor_model_parallel_size=tp, use_distributed_optimizer=distributed), dtype,
                              dict(sequences=1, seq_length=64, microbatches=1, world=tp)))
    return cases


def run(cases, groups) -> list:
    rows = []
    for name, config, parallel, dtype, shape in cases:
        world = shape["world"]
        started = time.perf_counter()
        measured = groups(world).run("tests.support.training_memory:measure_training_step", timeout=1800,
                                     hf_config=config, parallel=parallel, dtype=dtype, sequences=shape["sequences"],
                                     seq_length=shape["seq_length"], microbatches=shape["microbatches"])
        predicted = predict_training_step(config, parallel, dtype, shape["sequences"], shape["seq_length"],
                                          shape["microbatches"], world, kernels=_kernels())
        peak = max(m["peak"] for m in measured)
        rows.append((name, predicted.total(), peak, predicted.notes[0].split("peak at the ")[-1],
                     time.perf_counter() - started))
        print(_row(*rows[-1]), flush=True)
    return rows


def _kernels():
    import torch

    from harness.planning.cluster import CPU_KERNELS, LOCAL_CUDA_KERNELS, TE_KERNELS

    if not torch.cuda.is_available():
        return CPU_KERNELS
    from harness.parallel import platform

    return TE_KERNELS if platform.has_transformer_engine() else LOCAL_CUDA_KERNELS


def _row(name, predicted, measured, moment, seconds) -> str:
    return (f"| {name:<32} | {predicted / 2**20:>12.2f} | {measured / 2**20:>12.2f} | {predicted / measured:>6.3f} |"
            f" {moment:<24} | {seconds:>5.0f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=("small", "large", "all"), default="all")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu (live tensor memory)"
    print(f"device: {device}; torch {torch.__version__}")
    print(f"| {'case':<32} | {'predicted MiB':>12} | {'measured MiB':>12} | {'ratio':>6} | {'predicted peak at':<24} | {'s':>5} |")
    print(f"|{'-' * 34}|{'-' * 14}|{'-' * 14}|{'-' * 8}|{'-' * 26}|{'-' * 7}|")
    open_groups = {}

    def groups(world):
        if world not in open_groups:
            for group in open_groups.values():
                group.close()
            open_groups.clear()
            open_groups[world] = RankGroup(world_size=world, collective_timeout_s=1800)
        return open_groups[world]

    selected = {"small": small_cases, "large": large_cases}
    rows = []
    try:
        for kind in ("small", "large"):
            if args.cases in (kind, "all"):
                cases = selected[kind]()
                if kind == "large":  # TP=1 cases run alone, then the TP=2 ones: one group at a time
                    cases.sort(key=lambda case: case[4]["world"])
                rows += run(cases, groups)
    finally:
        for group in open_groups.values():
            group.close()
    worst = max(abs(p / m - 1) for _, p, m, _, _ in rows)
    print(f"largest deviation: {worst * 100:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
