"""The README's main command (`torchrun --nproc_per_node 2 -m harness.selfcheck`) runs and reports."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_selfcheck_under_torchrun():
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "harness.selfcheck", "--arch", "qwen2", "--layouts", "tp2", "pp2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("qwen2")]
    assert len(lines) == 2 and all(line.endswith(" ok") for line in lines), result.stdout
    assert "all layouts match TP=1/PP=1" in result.stdout
