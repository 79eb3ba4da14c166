"""Bad launcher input on the two-node cluster: one line naming the cause, a non-zero exit, and nothing
started that need not be (a missing variable or config stops before Ray); a Ray node that never
joins fails the job within its bound, naming it; a busy port is named with its node and variable."""
import re
import socket

import pytest

from tests.launchers.slurm_jobs import RL_SIZES, launcher_env, node2_port, ray_ports, read, submit

pytestmark = pytest.mark.timeout(600)
HANGS_ON_NODE2 = "tests/launchers/ray_hangs_on_node2.sh"


def error_lines(output: str):
    """The launchers' own error lines ("ray_cluster.sh [12:00:01]: error: ..."), not srun's."""
    return [line for line in output.splitlines() if re.match(r"\S+ \[\d\d:\d\d:\d\d\]: error: ", line)]


@pytest.mark.parametrize("script, unset, message", [
    ("grpo_32b.sbatch", "MODEL_PATH", "required variable(s) not set: MODEL_PATH (or pass actor_rollout_ref.model.path=...)"),
    ("ppo_32b.sbatch", "TRAIN_FILES", "required variable(s) not set: TRAIN_FILES (or pass data.train_files=...)"),
    ("sft_32b.sbatch", "MODEL_PATH", "required variable(s) not set: MODEL_PATH (or pass model.partial_pretrain=...)"),
    ("grpo_32b.sbatch", "CONFIG", "CONFIG=configs/no_such.yaml: no such file"),
])
def test_bad_settings_stop_the_job_before_anything_starts(slurm_cluster, tmp_path, script, unset, message):
    env = launcher_env(tmp_path, MODEL_PATH="/models/m", TRAIN_FILES="/data/train.parquet")
    if unset == "CONFIG":
        env["CONFIG"] = "configs/no_such.yaml"
    else:
        env.pop(unset)
    # The SFT script asks for 8 ranks per node; these nodes have 2 CPUs.
    job, output = submit(slurm_cluster, script, tmp_path, env, ["--ntasks-per-node=1"], [])
    info = slurm_cluster.wait_for_end(job, timeout_s=120)
    text = read(output)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "64:0", text
    errors = error_lines(text)
    assert len(errors) == 1 and message in errors[0], text
    assert "ray_cluster.sh" not in text and "srun" not in text


def failed_bring_up(cluster, directory, **settings) -> str:
    """Submits the GRPO script with `settings`; the job must fail with 69 and one error line, returned."""
    env = launcher_env(directory, CONFIG="configs/grpo_tiny_cpu.yaml", MODEL_PATH="/models/m",
                       TRAIN_FILES="/data/train.parquet", **settings)
    job, output = submit(cluster, "grpo_32b.sbatch", directory, env, [], RL_SIZES)
    info = cluster.wait_for_end(job, timeout_s=400)
    text = read(output)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "69:0", text[-4000:]
    assert "Ray cluster of" not in text  # the driver never started
    errors = error_lines(text)
    assert len(errors) == 1, text[-4000:]
    return errors[0]


def test_a_node_whose_ray_never_starts_fails_the_job_within_the_bound(slurm_cluster, tmp_path):
    error = failed_bring_up(slurm_cluster, tmp_path, RAY_CMD=HANGS_ON_NODE2, RAY_NODES_TIMEOUT_S="20")
    assert "node2 (127.0.0.3) did not join the Ray cluster at 127.0.0.2:" in error
    assert "(joined: 127.0.0.2) within 20 s (RAY_NODES_TIMEOUT_S)" in error


def test_a_busy_port_on_node2_is_named_and_ends_the_job_at_once(slurm_cluster, tmp_path):
    ports = ray_ports()
    port = node2_port(ports, "RAY_NODE_MANAGER_PORT")
    with socket.socket() as busy:
        busy.bind(("127.0.0.3", port))
        busy.listen()
        error = failed_bring_up(slurm_cluster, tmp_path, **ports)
    assert (f"the Ray worker on node2 exited with status 64 before every node joined: port {port} "
            f"(RAY_NODE_MANAGER_PORT) on 127.0.0.3 is already in use") in error
    assert "ray-worker-node2.log" in error
