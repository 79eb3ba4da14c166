"""Submitting the real launchers to the test cluster (tests/support/slurm_cluster.py): Ray ports that
are free on this shared machine, the tiny runs' settings, and waiting on a job's output."""
import socket
import time
from pathlib import Path
from typing import Dict, List

from tests.support.slurm_cluster import END_STATES
from tests.trainer.ppo_runs import ROOT, tiny_sizes

# Both fake nodes share this host, so every per-node Ray port of node2 is node1's + STRIDE.
STRIDE = 200
PER_NODE = ("RAY_NODE_MANAGER_PORT", "RAY_OBJECT_MANAGER_PORT", "RAY_METRICS_EXPORT_PORT", "RAY_RUNTIME_ENV_AGENT_PORT",
            "RAY_DASHBOARD_AGENT_GRPC_PORT", "RAY_DASHBOARD_AGENT_LISTEN_PORT")
# Outside Slurm's 268xx, Ray's default worker range (other engineers' Ray) and the ephemeral range.
RAY_PORT_BLOCKS = range(27000, 30200, 2 * STRIDE)
RL_SIZES = [*tiny_sizes(), "trainer.n_gpus_per_node=1", "trainer.device=cpu", "trainer.save_freq=-1",
            "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.export_hf=false"]


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def ray_ports() -> Dict[str, str]:
    """ray_cluster.sh's port settings for the two fake nodes, in a block of free ports."""
    for base in RAY_PORT_BLOCKS:
        ports = {"RAY_PORT": base, "RAY_CLIENT_SERVER_PORT": base + 1,
                 **{name: base + 10 + i for i, name in enumerate(PER_NODE)},
                 "RAY_MIN_WORKER_PORT": base + 100, "RAY_MAX_WORKER_PORT": base + 199}
        used = [p + shift for p in ports.values() for shift in (0, STRIDE)]
        used += [p for lo in (base + 100, base + 100 + STRIDE) for p in range(lo, lo + 100)]
        if all(_free(p) for p in set(used)):
            return {**{k: str(v) for k, v in ports.items()}, "RAY_NODE_PORT_STRIDE": str(STRIDE)}
    raise RuntimeError(f"no free block of Ray ports in {RAY_PORT_BLOCKS}")


def node2_port(env: Dict[str, str], name: str) -> int:
    return int(env[name]) + int(env["RAY_NODE_PORT_STRIDE"])


def launcher_env(directory: Path, **settings) -> Dict[str, str]:
    """The variables a user sets for our sbatch scripts, plus what a 2-core machine needs."""
    return {"RUN_DIR": str(directory / "run"), "LOG_DIR": str(directory / "logs"), "OMP_NUM_THREADS": "1",
            "RAY_OBJECT_STORE_MEMORY": str(200 * 1024 * 1024), "RAY_HEAD_TIMEOUT_S": "180",
            "RAY_NODES_TIMEOUT_S": "180", **ray_ports(), **settings}


def submit(cluster, script: str, directory: Path, env: Dict[str, str], sbatch_args: List[str], overrides: List[str]):
    """`sbatch --nodes=2 --gpus-per-node=0 --output=... SBATCH_ARGS launchers/SCRIPT OVERRIDES` from the
    repository root, as a user does; returns (job id, path of its output file)."""
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / "slurm.out"
    job = cluster.sbatch(["--nodes=2", "--gpus-per-node=0", f"--output={output}", *sbatch_args,
                          f"launchers/{script}", *overrides], env=env, cwd=ROOT)
    return job, output


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_text(cluster, job: int, path: Path, text: str, timeout_s: float) -> str:
    """Waits until `text` appears in `path` (a job's output or log); fails early if the job ends first."""
    deadline = time.monotonic() + timeout_s
    while text not in read(path):
        info = cluster.show_job(job)
        if info.get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "COMPLETING"):
            raise AssertionError(f"job {job} ended ({info.get('JobState')}) before {text!r} appeared in {path}:\n"
                                 f"{read(path)[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in {path} within {timeout_s:.0f} s:\n{read(path)[-4000:]}")
        time.sleep(0.5)
    return read(path)


def restart_soon(cluster, job: int, restarts: int, timeout_s: float = 300) -> None:
    """Waits until the job is requeued for the `restarts`-th time, then lets it start at once (Slurm
    holds a requeued job ~2 minutes). The second's pause: slurmd refuses a job's credential issued in
    the same second its previous run was revoked ("Job credential revoked")."""
    def requeued(info) -> bool:
        if info.get("JobState") in END_STATES:
            raise AssertionError(f"job {job} ended ({info['JobState']}, exit {info.get('ExitCode')}) instead of "
                                 f"being requeued (restart {restarts})")
        return info.get("JobState") == "PENDING" and int(info.get("Restarts", 0)) >= restarts

    cluster.wait_for(job, requeued, timeout_s, f"requeue number {restarts}")
    time.sleep(2)
    cluster.command("scontrol", "update", f"JobId={job}", "StartTime=now")
