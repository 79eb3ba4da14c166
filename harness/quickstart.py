"""The CPU quickstart, one command: data -> tiny model -> SFT (2 data-parallel ranks) -> GRPO on Ray -> evaluation.

    python -m harness.quickstart [--out DIR] [--seed S]

Prepares the char_count task ("strawberry: r?" -> "3", how many r in strawberry) with demonstrations
for words of at most 5 letters only, makes a tiny character-level Qwen2, fine-tunes it with Megatron
on 2 data-parallel ranks (`torchrun --nproc_per_node 2 -m harness.main_sft`),
then improves it with GRPO (`python -m harness.main_ppo`: 2 Megatron ranks on Ray, the SGLang engine
when its environment exists, the embedded engine otherwise), and evaluates the base (random-init),
SFT and GRPO models greedily on the same held-out prompts. GRPO's gain over SFT is reported with the
standard error of the paired per-prompt differences. Writes DIR/report.md, DIR/report.json and PNG
curves in DIR/plots. Each stage is the command a user would type; they are printed as they run, and
each stage's time when it ends.
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
GRPO_CONFIG = "configs/grpo_quickstart_tiny_cpu.yaml"
DEMONSTRATED_WORD_LENGTH = 5  # SFT demonstrations only for words of at most this many letters


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}


def start(command, log: Path) -> subprocess.Popen:
    print("$ " + " ".join(str(c) for c in command), flush=True)
    with open(log, "a") as out:
        return subprocess.Popen([str(c) for c in command], cwd=REPO, env=environment(), stdout=out,
                                stderr=subprocess.STDOUT)


def check(process: subprocess.Popen, log: Path) -> None:
    if process.wait():
        tail = log.read_text().splitlines()[-30:]
        raise SystemExit(f"step failed (exit {process.returncode}); last lines of {log}:\n" + "\n".join(tail))


def run(command, log: Path) -> None:
    check(start(command, log), log)


class Stages:
    """Wall time of each stage, printed as it ends."""

    def __init__(self):
        self.seconds = {}
        self._started = time.time()

    def done(self, name: str) -> None:
        now = time.time()
        self.seconds[name] = round(now - self._started, 1)
        self._started = now
        print(f"[{name}: {self.seconds[name]:.0f} s]", flush=True)


def follow_grpo(process: subprocess.Popen, run_dir: Path, total_steps: int, log: Path) -> None:
    """A progress bar over GRPO's steps with the training reward and the latest validation accuracy,
    read from the run's metrics.jsonl while main_ppo runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    metrics, offset = run_dir / "metrics.jsonl", 0
    shown = {"reward": None, "accuracy": None}
    columns = (TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[summary]}"))
    with Progress(*columns) as progress:
        task = progress.add_task("GRPO", total=total_steps, summary="starting Ray and the rollout engine")
        while True:
            finished = process.poll() is not None
            if metrics.exists():
                with open(metrics) as f:
                    f.seek(offset)
                    lines = f.readlines()
                complete = [line for line in lines if line.endswith("\n")]
                offset += sum(len(line.encode()) for line in complete)
                for record in map(json.loads, complete):
                    if "critic/score/mean" in record:
                        shown["reward"] = record["critic/score/mean"]
                    if "val/accuracy" in record:
                        shown["accuracy"] = (record["val/accuracy"], record["step"])
                    progress.update(task, completed=record["step"], summary=_summary(shown))
            if finished:
                break
            time.sleep(0.5)
    check(process, log)


def _summary(shown: dict) -> str:
    parts = []
    if shown["reward"] is not None:
        parts.append(f"reward {shown['reward']:.3f}")
    if shown["accuracy"] is not None:
        accuracy, step = shown["accuracy"]
        parts.append(f"val accuracy {accuracy:.3f} (step {step})")
    return "  ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--seed", type=int, default=0, help="data, model initialisation, SFT and GRPO")
    parser.add_argument("--sft-steps", type=int, default=None, help="override the config's total_training_steps")
    parser.add_argument("--grpo-steps", type=int, default=None, help="override the GRPO config's total_training_steps")
    parser.add_argument("--engine", choices=["auto", "sglang", "embedded"], default="auto",
                        help="GRPO's rollout engine (auto: SGLang when its environment is built)")
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-val", type=int, default=2000, help="held-out prompts, the same for every model")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "quickstart.log"
    python = sys.executable
    torchrun = Path(python).with_name("torchrun")
    started = time.time()
    stages = Stages()

    data, base, sft, grpo = out / "data", out / "base_model", out / "sft", out / "grpo"
    if not (data / "sft_train.parquet").exists():
        run([python, "tools/prepare_data.py", "char_count", "--out", data, "--n-train", args.n_train,
             "--n-val", args.n_val, "--seed", args.seed, "--sft-max-word-length", DEMONSTRATED_WORD_LENGTH], log)
    stages.done("data")
    if not (base / "config.json").exists():
        run([python, "tools/make_tiny_model.py", "--arch", "qwen2", "--size", "small", "--chat-template", "compact",
             "--out", base, "--seed", args.seed], log)
    stages.done("tiny model")
    sft_command = [
        torchrun, "--nproc_per_node", 2, "-m", "harness.main_sft", "--config", "configs/sft_tiny_cpu.yaml",
        f"data.train_files={data / 'sft_train.parquet'}", f"data.val_files={data / 'sft_val.parquet'}",
        f"model.partial_pretrain={base}", f"trainer.default_local_dir={sft}", f"trainer.seed={args.seed}",
    ]
    if args.sft_steps:
        sft_command.append(f"trainer.total_training_steps={args.sft_steps}")
    run(sft_command, log)
    stages.done("SFT")
    engine = args.engine if args.engine != "auto" else ("sglang" if os.path.exists(default_sglang_python()) else "embedded")
    grpo_command = [
        python, "-m", "harness.main_ppo", "--config", GRPO_CONFIG,
        f"data.train_files={data / 'rl_train.parquet'}", f"data.val_files={data / 'rl_val.parquet'}",
        f"actor_rollout_ref.model.path={sft / 'hf_best'}", f"trainer.default_local_dir={grpo}",
        f"actor_rollout_ref.rollout.name={engine}", f"trainer.seed={args.seed}", f"data.seed={args.seed}",
    ]
    if args.grpo_steps:
        grpo_command.append(f"trainer.total_training_steps={args.grpo_steps}")
    follow_grpo(start(grpo_command, log), grpo, args.grpo_steps or _config_steps(GRPO_CONFIG), log)
    stages.done(f"GRPO ({engine})")
    # Two comparisons, each paired on the same prompts: SFT against the random-init base, GRPO against SFT.
    for name, model, reference in (("sft", sft / "hf_best", base), ("grpo", grpo / "hf_actor", sft / "hf_best")):
        run([python, "-m", "harness.evaluate", "--checkpoint-path", model, "--compare-with", reference,
             "--data", data / "rl_val.parquet", "--max-new-tokens", 8, "--samples", 4, "--temperature", 1.0,
             "--out", out / f"eval_{name}"], log)
    stages.done("evaluation")

    evaluations = {name: json.loads((out / f"eval_{name}" / "evaluation.json").read_text()) for name in ("sft", "grpo")}
    keys = ("accuracy", "sampled_accuracy", "mean_reward", "mean_response_length", "prompts")
    report = {
        "seed": args.seed,
        "base": {k: evaluations["sft"]["base"][k] for k in keys},
        "sft": {k: evaluations["sft"]["checkpoint"][k] for k in keys},
        "grpo": {k: evaluations["grpo"]["checkpoint"][k] for k in keys},
        "sft_minus_base": evaluations["sft"]["checkpoint_minus_base"]["accuracy"],
        "sft_minus_base_se": evaluations["sft"]["checkpoint_minus_base"]["se"],
        "grpo_minus_sft": evaluations["grpo"]["checkpoint_minus_base"]["accuracy"],
        "grpo_minus_sft_se": evaluations["grpo"]["checkpoint_minus_base"]["se"],
        "per_prompt": {"base": "eval_sft/evaluation.json:base", "sft": "eval_sft/evaluation.json:checkpoint",
                       "grpo": "eval_grpo/evaluation.json:checkpoint"},
        "accuracy_by_word_length": by_word_length(data / "rl_val.parquet", {
            "base": evaluations["sft"]["base"], "sft": evaluations["sft"]["checkpoint"],
            "grpo": evaluations["grpo"]["checkpoint"]}),
        "sft_best": json.loads((sft / "hf_best.json").read_text()),
        "grpo_engine": engine,
        "verdict": evaluations["sft"]["verdict"],
        "plots": [str(p.relative_to(out)) for p in plots(out, sft, grpo)],
        "stage_seconds": stages.seconds,
        "seconds": round(time.time() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(report, sft, grpo))
    print((out / "report.md").read_text())
    return 0


def by_word_length(val_file: Path, evaluations: dict) -> dict:
    """Greedy accuracy of each model on the words SFT had demonstrations for and on the longer ones."""
    import pyarrow.parquet as pq

    from harness.evaluate import correct

    lengths = [len(info["word"]) for info in pq.read_table(val_file, columns=["extra_info"]).column(0).to_pylist()]
    groups = {f"<= {DEMONSTRATED_WORD_LENGTH} letters (demonstrated)": lambda n: n <= DEMONSTRATED_WORD_LENGTH,
              f"> {DEMONSTRATED_WORD_LENGTH} letters (RL only)": lambda n: n > DEMONSTRATED_WORD_LENGTH}
    table = {}
    for name, evaluation in evaluations.items():
        right = correct(evaluation)
        table[name] = {}
        for group, member in groups.items():
            rows = [row for row in right if member(lengths[row])]
            table[name][group] = {"accuracy": sum(right[row] for row in rows) / len(rows) if rows else None,
                                  "prompts": len(rows)}
    return table


def _config_steps(path: str) -> int:
    from omegaconf import OmegaConf

    return int(OmegaConf.load(REPO / path).trainer.total_training_steps)


def plots(out: Path, sft: Path, grpo: Path) -> list:
    """Loss (SFT), reward and accuracy (GRPO) curves; accuracy starts at the SFT model (step 0)."""
    from harness.tracking.plots import plot_run_metrics

    return (plot_run_metrics(sft, out / "plots" / "sft", {"sft_loss": ["train/loss", "val/loss"]})
            + plot_run_metrics(grpo, out / "plots" / "grpo", {
                "grpo_reward": ["critic/score/mean", "val/score/mean"], "grpo_accuracy": ["val/accuracy"],
                "grpo_actor": ["actor/pg_loss", "actor/ppo_kl", "actor/entropy"]}))


def markdown_report(report: dict, sft: Path, grpo: Path) -> str:
    names = {"base": "base (random init, untrained)", "sft": "SFT", "grpo": "GRPO (from SFT)"}
    rows = "\n".join(f"| {names[name]} | {r['accuracy']:.3f} | {r['sampled_accuracy']:.3f} | {r['mean_reward']:.3f} | "
                     f"{r['mean_response_length']:.1f} |" for name, r in ((n, report[n]) for n in names))
    images = "\n".join(f"![{Path(p).stem}]({p})" for p in report["plots"])
    best, prompts = report["sft_best"], report["grpo"]["prompts"]
    z = report["grpo_minus_sft"] / report["grpo_minus_sft_se"] if report["grpo_minus_sft_se"] else float("inf")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report["stage_seconds"].items())
    return (
        f"# Quickstart: char_count (seed {report['seed']})\n\n"
        f"All three models answer the same {prompts} held-out prompts, greedily. \"base\" is the randomly "
        "initialised model before any training.\n\n"
        "| model | accuracy (greedy) | sampled accuracy (mean@4, T=1) | mean reward (greedy) | mean response length |\n"
        "|---|---|---|---|---|\n" + rows + "\n\n"
        f"**GRPO - SFT: {report['grpo_minus_sft']:+.3f} ± {report['grpo_minus_sft_se']:.3f}** greedy accuracy "
        f"({z:.1f} standard errors; the error is that of the mean of the {prompts} per-prompt differences).\n"
        f"SFT - base: {report['sft_minus_base']:+.3f} ± {report['sft_minus_base_se']:.3f}.\n\n"
        + length_table(report["accuracy_by_word_length"], names) + "\n\n"
        f"SFT: best step {best['step']} (validation loss {best.get('val_loss', float('nan')):.4f}); "
        f"GRPO rollout engine: {report['grpo_engine']}.\n"
        f"Stages: {stages}; whole pipeline {report['seconds']:.0f} s.\n"
        f"Metrics per step: {sft / 'metrics.jsonl'}, {grpo / 'metrics.jsonl'}.\n\n{images}\n"
    )


def length_table(by_length: dict, names: dict) -> str:
    groups = list(next(iter(by_length.values())))
    counts = {group: by_length["sft"][group]["prompts"] for group in groups}
    header = "| model | " + " | ".join(f"{group}, {counts[group]} prompts" for group in groups) + " |\n"
    rows = "\n".join(f"| {names[name]} | " + " | ".join(
        "-" if cells[group]["accuracy"] is None else f"{cells[group]['accuracy']:.3f}" for group in groups) + " |"
        for name, cells in by_length.items())
    return ("SFT saw demonstrations for short words only; GRPO sampled prompts of every length and learned "
            "from the exact-count reward. Greedy accuracy by word length:\n\n" + header
            + "|---|" + "---|" * len(groups) + "\n" + rows)


if __name__ == "__main__":
    sys.exit(main())
