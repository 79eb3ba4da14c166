"""The two tools end to end, as users run them (separate processes), with --verify."""
import re
import subprocess
import sys

from tests.conversion.conftest import ROOT


def run_tool(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_convert_both_ways_with_verify(tiny_hf_dir, tmp_path):
    hf_dir = tiny_hf_dir("llama", tie=True)
    done = run_tool("convert_hf_to_mcore", "--hf-path", hf_dir, "--output", tmp_path / "mcore",
                    "--tp", 2, "--pp", 2, "--verify")
    assert done.returncode == 0, done.stderr
    difference = re.search(r"max \|logit difference\| = (\S+), greedy-token agreement = 100.00 %",
                           done.stdout)
    assert difference and float(difference.group(1)) < 1e-4, done.stdout

    # A tolerance nothing meets: the same check fails, with exit code 1, after writing the output.
    done = run_tool("convert_mcore_to_hf", "--mcore-path", tmp_path / "mcore", "--output",
                    tmp_path / "hf", "--verify", "--tolerance", 1e-12)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "max |logit difference|" in done.stdout
    assert "logits differ beyond the tolerance" in done.stderr
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
