import subprocess
import sys

import pytest

from tests.launchers.local_pods import ROOT


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """char_count data (64 train / 16 validation prompts) and a tiny random Qwen2, made once."""
    root = tmp_path_factory.mktemp("launch_assets")
    for command in (
        [sys.executable, "tools/prepare_data.py", "char_count", "--out", str(root / "data"), "--n-train", "64",
         "--n-val", "16"],
        [sys.executable, "tools/make_tiny_model.py", "--arch", "qwen2", "--out", str(root / "model")],
    ):
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return root
