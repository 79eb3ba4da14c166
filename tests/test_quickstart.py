"""The README's main command, shortened (fewer examples, SFT and GRPO steps): every stage runs through
its real entry point, the report compares base, SFT and GRPO on the same held-out prompts, and its
GRPO - SFT figure is the mean of the paired per-prompt differences."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N_VAL, SFT_STEPS, GRPO_STEPS = 200, 60, 2


def correct(evaluation: dict) -> dict:
    return {item["row"]: float(item["reward"] >= 1.0) for item in evaluation["per_prompt"]}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    result = subprocess.run(
        [sys.executable, "-m", "harness.quickstart", "--out", str(out), "--n-train", "2000", "--n-val", str(N_VAL),
         "--sft-steps", str(SFT_STEPS), "--grpo-steps", str(GRPO_STEPS)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text()), result.stdout


@pytest.mark.timeout(660)
def test_quickstart_end_to_end(quickstart):
    out, report, stdout = quickstart
    assert report["seed"] == 0 and report["grpo_engine"] in ("sglang", "embedded")
    for name in ("base", "sft", "grpo"):
        assert report[name]["prompts"] == N_VAL
        assert 0.0 <= report[name]["accuracy"] <= 1.0 and 0.0 <= report[name]["sampled_accuracy"] <= 1.0
    assert report["base"]["accuracy"] == 0.0  # random weights do not count letters
    # SFT learned the task's answers, clearly beyond chance on these prompts (a broken loss mask,
    # data or checkpoint hand-over leaves it at the base's 0).
    assert report["sft_minus_base"] >= 3 * report["sft_minus_base_se"] > 0
    assert report["sft"]["mean_response_length"] < report["base"]["mean_response_length"]  # learned to stop
    metrics = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, SFT_STEPS + 1))
    assert metrics[-1]["train/loss"] < metrics[0]["train/loss"]
    grpo = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in grpo if "actor/pg_loss" in m] == list(range(1, GRPO_STEPS + 1))
    assert grpo[0]["step"] == 0 and "val/accuracy" in grpo[0]  # the SFT model, validated before GRPO
    for plot in ("plots/sft/sft_loss.png", "plots/grpo/grpo_reward.png", "plots/grpo/grpo_accuracy.png"):
        assert plot in report["plots"] and (out / plot).read_bytes().startswith(b"\x89PNG")
    # Every stage's time is printed as it ends and kept in the report; the report states the gain.
    assert list(report["stage_seconds"]) == ["data", "tiny model", "SFT", f"GRPO ({report['grpo_engine']})", "evaluation"]
    for stage in report["stage_seconds"]:
        assert f"[{stage}: " in stdout
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Quickstart") and "base (random init, untrained)" in markdown
    assert f"GRPO - SFT: {report['grpo_minus_sft']:+.3f} ± {report['grpo_minus_sft_se']:.3f}" in markdown


@pytest.mark.timeout(60)
def test_grpo_minus_sft_is_paired_over_the_same_prompts(quickstart):
    """Recomputed from the per-prompt answers: both models answered the same rows, the difference is the
    mean of the per-prompt differences, its error their standard error."""
    out, report, _ = quickstart
    grpo_eval = json.loads((out / "eval_grpo" / "evaluation.json").read_text())
    sft_eval = json.loads((out / "eval_sft" / "evaluation.json").read_text())
    grpo, sft = correct(grpo_eval["checkpoint"]), correct(grpo_eval["base"])
    assert sorted(grpo) == sorted(sft) == sorted(correct(sft_eval["checkpoint"])) and len(grpo) == N_VAL
    assert sft == correct(sft_eval["checkpoint"])  # greedy: the SFT model answers the same in both evaluations
    differences = [grpo[row] - sft[row] for row in sorted(grpo)]
    mean = sum(differences) / N_VAL
    se = math.sqrt(sum((d - mean) ** 2 for d in differences) / (N_VAL - 1) / N_VAL)
    assert report["grpo_minus_sft"] == pytest.approx(mean, abs=1e-12)
    assert report["grpo_minus_sft_se"] == pytest.approx(se, abs=1e-12)
    assert mean == pytest.approx(report["grpo"]["accuracy"] - report["sft"]["accuracy"], abs=1e-12)
