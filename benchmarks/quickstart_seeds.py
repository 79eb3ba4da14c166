"""The quickstart on several seeds, one after another: accuracy, GRPO's paired gain over SFT and wall time.

    python benchmarks/quickstart_seeds.py --seeds 0 1 2 3 [--out DIR] [-- QUICKSTART_ARGS ...]

Runs `python -m harness.quickstart --seed S` for each seed (never two at once: each uses both cores),
then prints one row per seed: base, SFT and GRPO greedy accuracy, GRPO - SFT with its paired standard
error and the ratio z, each stage's seconds, the whole wall time and the 1-minute load average at the
start and end of the run (timings are only comparable on an otherwise idle machine). Arguments after
`--` go to every quickstart (e.g. `-- --grpo-steps 20`).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", default=None, help="directory for the runs (default: a temporary one, kept)")
    parser.add_argument("quickstart_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = args.quickstart_args[1:] if args.quickstart_args[:1] == ["--"] else args.quickstart_args
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="quickstart_seeds_"))
    rows = []
    for seed in args.seeds:
        run_dir = out / f"seed_{seed}"
        load_before = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-m", "harness.quickstart", "--seed", str(seed), "--out", str(run_dir),
                               *extra], cwd=ROOT, stdout=subprocess.DEVNULL)
        load_after = os.getloadavg()[0]
        if done.returncode:
            print(f"seed {seed}: quickstart failed (exit {done.returncode}), see {run_dir / 'quickstart.log'}")
            continue
        report = json.loads((run_dir / "report.json").read_text())
        rows.append((seed, report, load_before, load_after))
        print(row(seed, report, load_before, load_after), flush=True)
    print(f"\nruns in {out}")
    print("| seed | base | SFT | GRPO | GRPO - SFT ± SE | z | stages (s) | wall (s) | load avg start/end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed, report, before, after in rows:
        print(row(seed, report, before, after))
    return 0


def row(seed: int, report: dict, load_before: float, load_after: float) -> str:
    difference, se = report["grpo_minus_sft"], report["grpo_minus_sft_se"]
    stages = ", ".join(f"{name} {seconds:.0f}" for name, seconds in report["stage_seconds"].items())
    return (f"| {seed} | {report['base']['accuracy']:.3f} | {report['sft']['accuracy']:.3f} | "
            f"{report['grpo']['accuracy']:.3f} | {difference:+.3f} ± {se:.3f} | {difference / se if se else float('inf'):.1f} | "
            f"{stages} | {report['seconds']:.0f} | {load_before:.1f} / {load_after:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
