"""The CPU quickstart, one command: data -> tiny model -> SFT (TP=2) -> GRPO on Ray -> evaluation.

    python -m harness.quickstart [--out DIR]

Prepares the char_count task ("How many r in strawberry?"), makes a tiny character-level Qwen2,
fine-tunes it with Megatron at tensor parallel 2 (`torchrun --nproc_per_node 2 -m harness.main_sft`),
then improves it with GRPO (`python -m harness.main_ppo`: 2 Megatron ranks on Ray, the SGLang engine
when its environment exists, the embedded engine otherwise), and evaluates base, SFT and GRPO models
on the same held-out prompts. Writes DIR/report.md, DIR/report.json and PNG curves in DIR/plots.
Each step is the command a user would type; they are printed as they run.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.config.rollout import default_sglang_python

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
    parser.add_argument("--grpo-steps", type=int, default=None, help="override the GRPO config's total_training_steps")
    parser.add_argument("--engine", choices=["auto", "sglang", "embedded"], default="auto",
                        help="GRPO's rollout engine (auto: SGLang when its environment is built)")
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
    grpo = out / "grpo"
    engine = args.engine if args.engine != "auto" else ("sglang" if os.path.exists(default_sglang_python()) else "embedded")
    grpo_command = [
        python, "-m", "harness.main_ppo", "--config", "configs/grpo_tiny_cpu.yaml",
        f"data.train_files={data / 'rl_train.parquet'}", f"data.val_files={data / 'rl_val.parquet'}",
        f"actor_rollout_ref.model.path={sft / 'hf_best'}", f"trainer.default_local_dir={grpo}",
        f"actor_rollout_ref.rollout.name={engine}",
    ]
    if args.grpo_steps:
        grpo_command.append(f"trainer.total_training_steps={args.grpo_steps}")
    run(grpo_command, log)
    for name, model, compare in (("sft", sft / "hf_best", ["--compare-with", base]), ("grpo", grpo / "hf_actor", [])):
        run([python, "-m", "harness.evaluate", "--checkpoint-path", model, *compare, "--data", data / "rl_val.parquet",
             "--max-new-tokens", 8, "--samples", 4, "--temperature", 1.0, "--out", out / f"eval_{name}"], log)

    evaluations = {name: json.loads((out / f"eval_{name}" / "evaluation.json").read_text()) for name in ("sft", "grpo")}
    keys = ("accuracy", "sampled_accuracy", "mean_reward", "mean_response_length")
    report = {
        "base": {k: evaluations["sft"]["base"][k] for k in keys},
        "sft": {k: evaluations["sft"]["checkpoint"][k] for k in keys},
        "grpo": {k: evaluations["grpo"]["checkpoint"][k] for k in keys},
        "sft_best": json.loads((sft / "hf_best.json").read_text()),
        "grpo_engine": engine,
        "verdict": evaluations["sft"]["verdict"],
        "plots": [str(p.relative_to(out)) for p in plots(out, sft, grpo)],
        "seconds": round(time.time() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(report, sft, grpo))
    print((out / "report.md").read_text())
    return 0


def plots(out: Path, sft: Path, grpo: Path) -> list:
    """Loss (SFT), reward and accuracy (GRPO) curves; accuracy starts at the SFT model (step 0)."""
    from harness.tracking.plots import plot_run_metrics

    return (plot_run_metrics(sft, out / "plots" / "sft", {"sft_loss": ["train/loss", "val/loss"]})
            + plot_run_metrics(grpo, out / "plots" / "grpo", {
                "grpo_reward": ["critic/score/mean", "val/score/mean"], "grpo_accuracy": ["val/accuracy"],
                "grpo_actor": ["actor/pg_loss", "actor/ppo_kl", "actor/entropy"]}))


def markdown_report(report: dict, sft: Path, grpo: Path) -> str:
    rows = "\n".join(f"| {name} | {r['accuracy']:.3f} | {r['sampled_accuracy']:.3f} | {r['mean_reward']:.3f} | "
                     f"{r['mean_response_length']:.1f} |" for name, r in ((n, report[n]) for n in ("base", "sft", "grpo")))
    images = "\n".join(f"![{Path(p).stem}]({p})" for p in report["plots"])
    best = report["sft_best"]
    return (
        "# Quickstart: char_count\n\n"
        "| model | accuracy (greedy) | sampled accuracy (mean@4, T=1) | mean reward (greedy) | mean response length |\n"
        "|---|---|---|---|---|\n" + rows + "\n\n"
        f"SFT: best step {best['step']} (validation loss {best.get('val_loss', float('nan')):.4f}); "
        f"GRPO rollout engine: {report['grpo_engine']}; whole pipeline {report['seconds']} s.\n"
        f"Metrics per step: {sft / 'metrics.jsonl'}, {grpo / 'metrics.jsonl'}.\n\n{images}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
