"""Per-phase time of an RL step on the tiny model, and the harness's own overhead.

    python benchmarks/rl_step_bench.py                       # GRPO, embedded engine, 8 steps
    python benchmarks/rl_step_bench.py --engine sglang --estimator gae --steps 10

Runs `python -m harness.main_ppo` (2 Megatron ranks on Ray, the char_count task, a tiny random Qwen2
scored by a graded reward so every phase does real work), then reads its metrics.jsonl. Prints the
mean seconds of every phase over the steps after the first (start-up effects), and the overhead:
the time of a step spent outside generation, model compute (forward/backward and optimizer steps,
measured inside the workers) and weight sync, as a share of the step. That share is Ray dispatch,
moving batches, scoring, advantage math and bookkeeping.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHASES = ("gen", "reward", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor",
          "update_weights", "step")


def run(engine: str, estimator: str, steps: int, work: pathlib.Path) -> list:
    python = sys.executable
    for command in (
        [python, "tools/prepare_data.py", "char_count", "--out", str(work / "data"), "--n-train", "512", "--n-val", "16"],
        [python, "tools/make_tiny_model.py", "--arch", "qwen2", "--size", "small", "--out", str(work / "model"),
         "--dtype", "bfloat16" if engine == "sglang" else "float32"],
    ):
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    run_dir = work / "run"
    command = [
        python, "-m", "harness.main_ppo", "--config", "configs/grpo_tiny_cpu.yaml",
        f"data.train_files={work / 'data' / 'rl_train.parquet'}", f"actor_rollout_ref.model.path={work / 'model'}",
        f"trainer.default_local_dir={run_dir}", f"actor_rollout_ref.rollout.name={engine}",
        f"algorithm.adv_estimator={estimator}", "actor_rollout_ref.actor.use_kl_loss=true",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=-1", "trainer.test_freq=-1",
        "trainer.val_before_train=false", "trainer.export_hf=false", "trainer.logger=[console]",
        "custom_reward_function.path=tests/trainer/ppo_hooks.py", "custom_reward_function.name=length_score",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"main_ppo failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["embedded", "sglang"], default="embedded")
    parser.add_argument("--estimator", default="grpo", help="grpo, or gae to include a critic")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        records = run(args.engine, args.estimator, args.steps, pathlib.Path(work))[1:]  # step 1 warms up
    mean = lambda key: statistics.mean(r.get(key, 0.0) for r in records)  # noqa: E731
    print(f"engine={args.engine} estimator={args.estimator} steps={len(records)} (after the first) "
          f"samples/step={records[0]['batch/samples']:.0f} tokens/step={mean('perf/total_num_tokens'):.0f}")
    for phase in PHASES:
        if f"timing_s/{phase}" in records[0]:
            print(f"  {phase:<15} {mean(f'timing_s/{phase}'):8.3f} s")
    compute = sum(mean(k) for k in records[0] if k.startswith("timing_s/compute_"))
    step = mean("timing_s/step")
    outside = step - mean("timing_s/gen") - compute - mean("timing_s/update_weights")
    print(f"  model compute   {compute:8.3f} s  (forward/backward + optimizer, slowest rank, all roles)")
    print(f"throughput: {mean('perf/throughput'):.0f} tokens/s")
    print(f"overhead (step - generation - model compute - weight sync): {outside:.3f} s = "
          f"{100 * outside / step:.1f} % of the step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
