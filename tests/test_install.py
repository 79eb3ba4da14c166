"""`pip install -e .` works in a fresh Python 3.11 venv, and importing the package is cheap."""
import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON311 = shutil.which("python3.11") or (sys.executable if sys.version_info[:2] == (3, 11) else None)


@pytest.mark.skipif(PYTHON311 is None, reason="no Python 3.11 on this machine")
def test_editable_install_into_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([PYTHON311, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-e", ROOT], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "import sys, time; t = time.perf_counter(); import harness, harness.config, harness.models; "
        "print(time.perf_counter() - t); "
        "heavy = [m for m in ('torch', 'megatron', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy; print(harness.__version__)"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    seconds, version = result.stdout.split()
    assert version == "0.1.0"
    assert float(seconds) < 0.5, f"import harness took {seconds} s"


def test_import_harness_is_light_in_project_env():
    code = "import sys, harness, harness.config, harness.models; print(sorted(m for m in ('torch','megatron') if m in sys.modules))"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert time.perf_counter() - start < 5  # interpreter start included; torch alone would add ~1-2 s
