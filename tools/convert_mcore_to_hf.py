"""Converts a megatron-core torch_dist checkpoint (saved at any TP/PP) into an HF model directory.

    python tools/convert_mcore_to_hf.py --mcore-path DIR --output DIR [--dtype bf16|fp16|fp32]
        [--hf-config DIR] [--max-shard-size GB] [--verify] [--force]

Writes sharded safetensors, model.safetensors.index.json, config.json and the tokenizer files that
transformers' from_pretrained loads. The HF config comes from beside the checkpoint (where
convert_hf_to_mcore.py puts it) or from --hf-config. Memory stays a few times the largest tensor.
--verify compares the written HF model's logits with the Megatron model's (TP=1, fp32) and exits 1
above the tolerance; errors in the input exit 2 and leave nothing half-written.
"""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mcore-path", required=True, help="torch_dist checkpoint directory")
    parser.add_argument("--output", required=True, help="HF model directory to create")
    parser.add_argument("--hf-config", help="directory with the model's HF config.json (and tokenizer); "
                        "default: --mcore-path")
    parser.add_argument("--max-shard-size", type=float, default=5.0, help="GB per safetensors file")

    from harness.checkpoint.convert import DTYPES, add_tool_arguments, mcore_to_hf, run_tool

    add_tool_arguments(parser, source_dtype="the checkpoint's dtype")
    args = parser.parse_args(argv)

    def convert():
        return mcore_to_hf(args.mcore_path, args.output, dtype=DTYPES.get(args.dtype),
                           hf_config=args.hf_config, force=args.force,
                           max_shard_bytes=int(args.max_shard_size * 1024**3))

    return run_tool(convert, args, lambda output: (output, args.mcore_path))


# dist_checkpointing re-imports the main module in its worker processes: keep the guard.
if __name__ == "__main__":
    sys.exit(main())
