"""The launcher scripts without a cluster: syntax, the allocation parsing, the settings refused before
any srun, and the exit code shared with the harness. (With Slurm: test_slurm_*.py.)"""
import re
import subprocess
from pathlib import Path

import pytest

from harness.trainer.preemption import PREEMPTED_EXIT_CODE
from tests.trainer.ppo_runs import ROOT

LAUNCHERS = ROOT / "launchers"
SCRIPTS = sorted([*LAUNCHERS.glob("*.sbatch"), *(LAUNCHERS / "slurm").glob("*.sh")])


def bash(script: str, env=None, timeout=30):
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_exit_code_agrees_with_the_harness():
    found = re.findall(r"^PREEMPTED_EXIT_CODE=(\d+)", (LAUNCHERS / "slurm" / "lib.sh").read_text(), re.M)
    assert found == [str(PREEMPTED_EXIT_CODE)]


@pytest.mark.parametrize("value, expected", [("2(x3),4", "2 2 2 4"), ("16", "16"), ("8,4(x2)", "8 4 4")])
def test_cpus_per_node_follow_slurm(value, expected):
    result = bash(f"source launchers/slurm/lib.sh; SLURM_JOB_CPUS_PER_NODE='{value}' allocation_cpus")
    assert result.stdout.split() == expected.split(), result.stderr


def test_ray_cluster_outside_an_allocation_says_so():
    result = bash("env -u SLURM_JOB_ID bash launchers/slurm/ray_cluster.sh python -c pass")
    assert result.returncode == 64
    assert "not inside a Slurm allocation" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_ray_cluster_without_a_command_prints_its_usage():
    result = bash("bash launchers/slurm/ray_cluster.sh --")
    assert result.returncode == 64 and "usage: ray_cluster.sh [--] COMMAND" in result.stderr


def test_a_gcs_port_in_the_worker_range_is_refused():
    result = bash("SLURM_JOB_ID=1 SLURMD_NODENAME=node1 RAY_PORT=12000 bash launchers/slurm/ray_cluster.sh true")
    assert result.returncode == 64
    assert "RAY_PORT=12000 lies in the worker port range 10002-19999" in result.stderr


def test_sbatch_script_outside_the_repository_names_the_fix(tmp_path):
    # sbatch runs a spooled copy; submitted from elsewhere, the script cannot find the repository.
    copy = tmp_path / "grpo_32b.sbatch"
    copy.write_text((LAUNCHERS / "grpo_32b.sbatch").read_text())
    result = subprocess.run(["bash", str(copy)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 64
    assert f"{tmp_path} is not the harness repository" in result.stderr and "HARNESS_REPO" in result.stderr


def test_probe_names_a_busy_port():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(["python3", "launchers/slurm/probe.py", "ports", "127.0.0.1", f"RAY_PORT={port}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 64
    assert f"port {port} (RAY_PORT) on 127.0.0.1 is already in use" in result.stderr


def test_readme_documents_every_variable():
    readme = (LAUNCHERS / "README.md").read_text()
    used = set()
    for path in SCRIPTS:
        used |= set(re.findall(r"\$\{?((?:RAY|CONTAINER|PREEMPT|MAX|HARNESS)_[A-Z_]+)", Path(path).read_text()))
    used |= {"CONFIG", "MODEL_PATH", "TRAIN_FILES", "VAL_FILES", "RUN_DIR", "VENV", "LOG_DIR", "MASTER_PORT", "PYTHON"}
    missing = sorted(name for name in used if name not in readme)
    assert not missing, f"launchers/README.md does not mention {missing}"
