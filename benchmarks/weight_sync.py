"""Weight sync throughput: a Megatron actor at TP=2 (two gloo ranks on this machine) pushes a bf16
Qwen2-shaped model of ``--params`` parameters into a running SGLang server on CPU, once per transport.

    python benchmarks/weight_sync.py [--params 0.5e9] [--transports tensor,distributed,disk]

One line per transport: ``transport=NAME seconds=S gbps=G memcpy_ratio=R peak_rss_gb=M`` where
gbps is GB/s of bf16 payload, R = sync time / time of one plain copy of the same bytes (measured in
the same run, on the trainer's rank 0), and M = the trainer rank 0's peak resident set during that
sync (sampled every 10 ms), which shows the bucket bound. Needs SGLang's venv
(``bash tools/setup_sglang_env.sh``).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GB = 1e9


def qwen2_config(params: float) -> dict:
    """Qwen2.5-0.5B's shape (tied embeddings) with as many layers as ``params`` needs."""
    hidden, ffn, vocab, heads, kv_heads = 896, 4864, 151936, 14, 2
    head_dim = hidden // heads
    per_layer = (hidden * hidden * 2 + 2 * hidden * kv_heads * head_dim + 3 * hidden * ffn
                 + 2 * hidden + hidden + 2 * kv_heads * head_dim)
    layers = max(1, math.ceil((params - vocab * hidden) / per_layer))
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
            "intermediate_size": ffn, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "num_hidden_layers": layers, "vocab_size": vocab, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
            "hidden_act": "silu", "torch_dtype": "bfloat16"}


def write_model(directory: str, config: dict) -> int:
    """An HF directory SGLang can serve (zero weights: only shapes matter here); returns #params."""
    import torch
    from safetensors.torch import save_file

    from harness.checkpoint.convert import expected_hf_shapes
    from harness.models.hf_config import load_model_spec

    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    shapes = expected_hf_shapes(load_model_spec(config))
    shapes.pop("lm_head.weight", None)  # tied
    save_file({n: torch.zeros(s, dtype=torch.bfloat16) for n, s in shapes.items()},
              os.path.join(directory, "model.safetensors"))
    return sum(math.prod(s) for s in shapes.values())


class PeakRSS:
    """Peak resident set of this process while the block runs (10 ms sampling)."""

    def __enter__(self):
        import psutil

        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.before = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def plain_copy_seconds(nbytes: int) -> float:
    """One memcpy of ``nbytes`` between resident buffers (best of 3: the first touch pays page faults)."""
    import torch

    source, target = torch.ones(nbytes, dtype=torch.uint8), torch.zeros(nbytes, dtype=torch.uint8)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return best


def sync_every_transport(url: str, model_dir: str, transports: list):
    """On both ranks: build the actor at TP=2 (bf16), then one timed sync per transport."""
    import torch

    from harness.config.parallel import ParallelConfig
    from harness.models.builder import build_model
    from harness.models.hf_config import load_model_spec
    from harness.parallel import destroy_model_parallel, initialize_model_parallel
    from harness.config.rollout import RolloutConfig
    from harness.rollout.sglang_engine import SGLangEngine
    from harness.workers.weight_export import export_hf_weights, push_weights

    torch.set_num_threads(2)
    spec = load_model_spec(model_dir)
    parallel = ParallelConfig(tensor_model_parallel_size=2)
    initialize_model_parallel(parallel)
    try:
        chunks = build_model(spec, parallel, params_dtype=torch.bfloat16)
        results = []
        stream = export_hf_weights(chunks, spec)
        torch.distributed.barrier()
        started = time.perf_counter()
        stream.drain()
        export_seconds = time.perf_counter() - started
        for version, transport in enumerate(transports, start=1):
            stream = export_hf_weights(chunks, spec)
            engine = None
            if stream.is_sender:
                engine = SGLangEngine(RolloutConfig(server_urls=[url], model_path=model_dir, device="cpu",
                                                    weight_transport=transport, update_timeout_s=600))
            torch.distributed.barrier()
            with PeakRSS() as rss:
                started = time.perf_counter()
                push_weights(stream, engine, version)
                seconds = time.perf_counter() - started
            nbytes = sum(math.prod(t.shape) * t.dtype.itemsize for t in stream.manifest)
            if engine is not None:
                engine.transport.reset()
                copy_seconds = plain_copy_seconds(nbytes)
                results.append(dict(transport=transport, seconds=seconds, bytes=nbytes,
                                    copy_seconds=copy_seconds, peak_rss=rss.peak, rss_before=rss.before,
                                    export_seconds=export_seconds))
        return results
    finally:
        destroy_model_parallel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=0.5e9)
    parser.add_argument("--transports", default="tensor,distributed,disk")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    from harness.config.rollout import RolloutConfig
    from harness.rollout.sglang_engine import SGLangEngine
    from tests.support.multirank import RankGroup

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        model_dir = os.path.join(workdir, "model")
        os.makedirs(model_dir)
        params = write_model(model_dir, qwen2_config(args.params))
        print(f"model: Qwen2 layout, {params / 1e9:.3f}B parameters, bf16 ({2 * params / GB:.2f} GB)", flush=True)
        server = SGLangEngine(RolloutConfig(model_path=model_dir, device="cpu", startup_timeout_s=600,
                                            log_dir=os.path.join(workdir, "logs")))
        group = RankGroup(world_size=2)
        try:
            results = group.run(f"{__name__ if __name__ != '__main__' else 'benchmarks.weight_sync'}:sync_every_transport",
                                timeout=3600, url=server.clients[0].url, model_dir=model_dir,
                                transports=args.transports.split(","))[0]
        finally:
            group.close()
            server.shutdown()
        for r in results:
            print(f"transport={r['transport']} seconds={r['seconds']:.2f} gbps={r['bytes'] / r['seconds'] / GB:.3f} "
                  f"memcpy_ratio={r['seconds'] / r['copy_seconds']:.1f} peak_rss_gb={r['peak_rss'] / GB:.2f}",
                  flush=True)
        first = results[0]
        print(f"(trainer rank 0: resident {first['rss_before'] / GB:.2f} GB before a sync; gathering and "
              f"converting alone, without sending, took {first['export_seconds']:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
