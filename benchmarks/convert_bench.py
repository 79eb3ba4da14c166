"""Conversion throughput and peak memory on a synthetic model of a few GB (default 2.3 GB, bf16).

    python benchmarks/convert_bench.py [--layers 16] [--workdir DIR]

Writes a random Qwen2-layout HF checkpoint (streamed, so writing it is memory-bounded too), converts
it HF -> torch_dist -> HF, each direction in a fresh process that reports its peak RSS (VmHWM) and
its RSS once everything is imported (the fixed interpreter/torch cost), and checks that the round
trip is bit-identical. Exits 1 when a direction's peak exceeds the fixed cost plus twice the largest
layer (the embedding counts as a layer: in big models it is the largest tensor).
"""
import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

GB = 1e9


def synthetic_config(layers: int) -> dict:
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 2048,
        "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 4,
        "num_hidden_layers": layers, "vocab_size": 32000, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "hidden_act": "silu", "torch_dtype": "bfloat16",
    }


def write_synthetic_model(directory: Path, config: dict) -> dict:
    """Random bf16 weights for every tensor the mapping names; returns sizes for the report."""
    import torch

    from harness.models.hf_config import load_model_spec
    from harness.models.mapping import model_mapping
    from harness.models.safetensors_io import ShardedWriter, TensorInfo, plan_shards

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    spec = load_model_spec(directory)
    mapping = model_mapping(spec)
    from harness.checkpoint.convert import expected_hf_shapes

    shapes = expected_hf_shapes(spec)
    infos = [TensorInfo(name, torch.bfloat16, shapes[name]) for name in mapping.hf_names()]
    generator = torch.Generator().manual_seed(0)
    with ShardedWriter(directory, plan_shards(infos, 1 << 30)) as writer:
        for info in infos:
            writer.write(info.name, torch.randn(info.shape, generator=generator).to(torch.bfloat16))
    layer_bytes = sum(i.nbytes for i in infos if i.name.startswith("model.layers.0."))
    return {"total": sum(i.nbytes for i in infos), "layer": layer_bytes,
            "largest_tensor": max(i.nbytes for i in infos)}


def rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def convert_in_this_process(direction: str, source: str, target: str, results) -> None:
    # Import everything the conversion touches first: that RSS is the fixed cost.
    import megatron.core.dist_checkpointing  # noqa: F401
    import transformers  # noqa: F401

    from harness.checkpoint.convert import hf_to_mcore, mcore_to_hf

    fixed = rss_bytes("VmRSS")
    start = time.perf_counter()
    if direction == "hf -> mcore":
        hf_to_mcore(source, target)
    else:
        mcore_to_hf(source, target)
    results.put({"seconds": time.perf_counter() - start, "fixed": fixed, "peak": rss_bytes("VmHWM")})


def measure(direction: str, source: Path, target: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=convert_in_this_process,
                              args=(direction, str(source), str(target), results))
    process.start()
    process.join(timeout=3600)
    if process.exitcode != 0:
        process.kill()  # by its own pid, if it is still running
        raise RuntimeError(f"{direction} failed (exit code {process.exitcode}); see its traceback above")
    return results.get(timeout=10)


def bit_identical(a: Path, b: Path) -> bool:
    import torch

    from harness.models.safetensors_io import SafetensorsReader

    left, right = SafetensorsReader(a), SafetensorsReader(b)
    if left.infos() != right.infos():
        return False
    return all(torch.equal(left.read(name), right.read(name)) for name in left.infos())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=16, help="16 layers: 2.3 GB")
    parser.add_argument("--workdir", help="where to write (default: a temporary directory)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    try:
        config = synthetic_config(args.layers)
        sizes = write_synthetic_model(workdir / "hf", config)
        print(f"synthetic Qwen2 layout, bf16: {args.layers} layers, hidden 2048, ffn 8192, "
              f"vocab 32000: {sizes['total'] / GB:.2f} GB; largest layer "
              f"{sizes['layer'] / 1e6:.0f} MB, largest tensor {sizes['largest_tensor'] / 1e6:.0f} MB")
        bound_extra = 2 * max(sizes["layer"], sizes["largest_tensor"])
        print(f"{'direction':<12} {'seconds':>8} {'GB/s':>6} {'peak RSS':>9} {'fixed':>7} "
              f"{'peak-fixed':>10} {'bound (fixed + 2 x layer)':>26}")
        failed = False
        for direction, source, target in (("hf -> mcore", workdir / "hf", workdir / "mcore"),
                                          ("mcore -> hf", workdir / "mcore", workdir / "back")):
            r = measure(direction, source, target)
            bound = r["fixed"] + bound_extra
            failed |= r["peak"] > bound
            print(f"{direction:<12} {r['seconds']:>8.1f} {sizes['total'] / GB / r['seconds']:>6.2f} "
                  f"{r['peak'] / 1e6:>7.0f}MB {r['fixed'] / 1e6:>5.0f}MB "
                  f"{(r['peak'] - r['fixed']) / 1e6:>8.0f}MB {bound / 1e6:>24.0f}MB"
                  f"{'  EXCEEDED' if r['peak'] > bound else ''}")
        identical = bit_identical(workdir / "hf", workdir / "back")
        print(f"round trip bit-identical: {'yes' if identical else 'NO'}")
        return 1 if failed or not identical else 0
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
