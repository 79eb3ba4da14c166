"""The CPU quickstart, one command: data -> tiny model -> SFT at TP=2 on 2 ranks -> evaluation.

    python -m harness.quickstart [--out DIR]

Prepares the char_count task ("How many r in strawberry?"), makes a tiny character-level Qwen2,
fine-tunes it with Megatron at tensor parallel 2 (`torchrun --nproc_per_node 2 -m harness.main_sft`),
and evaluates the base model against the SFT model on held-out prompts. Writes DIR/report.md and
DIR/report.json. Each step is the command a user would type; they are printed as they run.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(command, log: Path) -> None:
    print("$ " + " ".join(str(c) for c in command), flush=True)
    started = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as out:
        result = subprocess.run([str(c) for c in command], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        tail = log.read_text().splitlines()[-30:]
        raise SystemExit(f"step failed (exit {result.returncode}); last lines of {log}:\n" + "\n".join(tail))
    print(f"  ({time.time() - started:.0f} s)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--sft-steps", type=int, default=None, help="override the config's total_training_steps")
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-val", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "quickstart.log"
    python = sys.executable
    torchrun = Path(python).with_name("torchrun")
    started = time.time()

    data, base, sft = out / "data", out / "base_model", out / "sft"
    if not (data / "sft_train.parquet").exists():
        run([python, "tools/prepare_data.py", "char_count", "--out", data, "--n-train", args.n_train, "--n-val", args.n_val, "--seed", 0], log)
    if not (base / "config.json").exists():
        run([python, "tools/make_tiny_model.py", "--arch", "qwen2", "--size", "small", "--out", base, "--seed", 0], log)
    sft_command = [
        torchrun, "--nproc_per_node", 2, "-m", "harness.main_sft", "--config", "configs/sft_tiny_cpu.yaml",
        f"data.train_files={data / 'sft_train.parquet'}", f"data.val_files={data / 'sft_val.parquet'}",
        f"model.partial_pretrain={base}", f"trainer.default_local_dir={sft}",
    ]
    if args.sft_steps:
        sft_command.append(f"trainer.total_training_steps={args.sft_steps}")
    run(sft_command, log)
    run([python, "-m", "harness.evaluate", "--checkpoint-path", sft / "hf_best", "--compare-with", base,
         "--data", data / "rl_val.parquet", "--max-new-tokens", 8, "--out", out / "eval_sft"], log)

    evaluation = json.loads((out / "eval_sft" / "evaluation.json").read_text())
    report = {
        "base": {k: evaluation["base"][k] for k in ("accuracy", "mean_reward", "mean_response_length")},
        "sft": {k: evaluation["checkpoint"][k] for k in ("accuracy", "mean_reward", "mean_response_length")},
        "sft_best": json.loads((sft / "hf_best.json").read_text()),
        "verdict": evaluation["verdict"],
        "seconds": round(time.time() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(
        "# Quickstart: char_count\n\n"
        + (out / "eval_sft" / "evaluation.md").read_text().replace("| checkpoint |", "| sft |")
        + f"\nSFT: best step {report['sft_best']['step']} (validation loss {report['sft_best'].get('val_loss', float('nan')):.4f});"
        f" whole pipeline {report['seconds']} s. Metrics per step: {sft / 'metrics.jsonl'}.\n"
    )
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
