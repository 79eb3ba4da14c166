"""The README's main command, shortened (fewer examples, SFT and GRPO steps): every stage runs through
its real entry point and the report compares base, SFT and GRPO."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, "-m", "harness.quickstart", "--out", str(out), "--n-train", "640", "--n-val", "48", "--sft-steps", "40",
         "--grpo-steps", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["base"]["accuracy"] == 0.0  # random weights do not count letters
    assert report["sft"]["accuracy"] > report["base"]["accuracy"]
    assert report["sft"]["mean_response_length"] < report["base"]["mean_response_length"]  # learned to stop
    assert (out / "report.md").read_text().startswith("# Quickstart")
    metrics = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert metrics[-1]["train/loss"] < metrics[0]["train/loss"]
    grpo = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in grpo if "actor/pg_loss" in m] == [1, 2]
    assert grpo[0]["step"] == 0 and "val/accuracy" in grpo[0]  # the SFT model, validated before GRPO
    assert 0.0 <= report["grpo"]["accuracy"] <= 1.0 and report["grpo_engine"] in ("sglang", "embedded")
    for plot in ("plots/sft/sft_loss.png", "plots/grpo/grpo_reward.png", "plots/grpo/grpo_accuracy.png"):
        assert plot in report["plots"] and (out / plot).read_bytes().startswith(b"\x89PNG")
