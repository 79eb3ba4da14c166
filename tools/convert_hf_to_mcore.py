"""Converts an HF model directory (safetensors) into a megatron-core torch_dist checkpoint.

    python tools/convert_hf_to_mcore.py --hf-path DIR --output DIR [--tp N] [--pp M]
        [--dtype bf16|fp16|fp32] [--verify] [--force]

The checkpoint loads at any TP/PP; --tp/--pp only check, before anything is written, that the model
can run at that layout. Memory stays a few times the largest tensor, whatever the model size.
The HF config, tokenizer and a harness_conversion.json go beside the checkpoint. --verify compares
HF's logits with the Megatron model's (TP=1, fp32) and exits 1 above the tolerance; errors in the
input exit 2 with a message naming the file, tensor or key, and leave nothing half-written.
"""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hf-path", required=True, help="HF model directory (config.json + safetensors)")
    parser.add_argument("--output", required=True, help="checkpoint directory to create")
    parser.add_argument("--tp", type=int, default=1, help="tensor parallel size to check the model against")
    parser.add_argument("--pp", type=int, default=1, help="pipeline parallel size to check the model against")

    from harness.checkpoint.convert import DTYPES, add_tool_arguments, hf_to_mcore, run_tool
    from harness.config.parallel import ParallelConfig

    add_tool_arguments(parser, source_dtype="the HF weights' dtype")
    args = parser.parse_args(argv)

    def convert():
        parallel = ParallelConfig(tensor_model_parallel_size=args.tp, pipeline_model_parallel_size=args.pp)
        return hf_to_mcore(args.hf_path, args.output, dtype=DTYPES.get(args.dtype), parallel=parallel,
                           force=args.force)

    return run_tool(convert, args, lambda output: (args.hf_path, output))


# dist_checkpointing re-imports the main module in its worker processes: keep the guard.
if __name__ == "__main__":
    sys.exit(main())
