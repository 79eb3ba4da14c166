"""`sbatch launchers/grpo_32b.sbatch` on a real two-node Slurm cluster (tests/support/slurm_cluster.py):
Ray spans both nodes and GRPO completes; a job preempted twice, first by `scancel --signal=USR1
--batch`, then by reaching its time limit (`--signal=B:USR1@900`), checkpoints, is requeued, resumes
and ends with the uninterrupted job's metrics, no step logged twice."""
import json
import re

import pytest

from tests.launchers.slurm_jobs import RL_SIZES, launcher_env, read, restart_soon, submit, wait_for_text
from tests.trainer.ppo_runs import ROOT, STEPS, make_assets

pytestmark = pytest.mark.timeout(1200)
# Every metric a step logs, except wall-clock ones.
TIMED = ("timing_s/", "perf/")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("slurm_grpo_assets"))


def grpo_env(assets, directory):
    return launcher_env(directory, CONFIG="configs/grpo_tiny_cpu.yaml", MODEL_PATH=str(assets / "model"),
                        TRAIN_FILES=str(assets / "data" / "rl_train.parquet"))


def steps_logged(run_dir):
    """Every training step line of metrics.jsonl, in file order (a step logged twice shows twice)."""
    with open(run_dir / "metrics.jsonl") as f:
        return [record for record in map(json.loads, f) if "actor/pg_loss" in record]


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, assets, tmp_path_factory):
    """The plain 2-node job: the reference the preempted job must match."""
    directory = tmp_path_factory.mktemp("grpo_uninterrupted")
    job, output = submit(slurm_cluster, "grpo_32b.sbatch", directory, grpo_env(assets, directory), [], RL_SIZES)
    info = slurm_cluster.wait_for_end(job, timeout_s=600)
    return {"info": info, "output": read(output), "dir": directory}


def test_grpo_spans_both_nodes_and_completes(uninterrupted):
    info, output, directory = uninterrupted["info"], uninterrupted["output"], uninterrupted["dir"]
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", output[-4000:]
    # The repository came from SLURM_SUBMIT_DIR (sbatch ran a spooled copy) and the venv from it.
    assert f"python {ROOT}/.venv/bin/python" in output
    assert "ray_cluster.sh" in output and "Ray is up on 2 node(s): node1=127.0.0.2 node2=127.0.0.3" in output
    placed = re.search(r"Ray cluster of (\d+) node\(s\) \(([^)]*)\); training ranks on (.*)", output)
    assert placed, output[-4000:]
    assert placed.group(1) == "2" and placed.group(2) == "127.0.0.2, 127.0.0.3"
    assert sorted(placed.group(3).strip().split(", ")) == ["127.0.0.2", "127.0.0.3"]  # one rank per node
    run_dir = directory / "run"
    assert [r["step"] for r in steps_logged(run_dir)] == list(range(1, STEPS + 1))
    assert (run_dir / "checkpoints" / "latest").read_text() == str(STEPS)
    assert (run_dir / "checkpoints" / f"global_step_{STEPS}" / "actor" / "harness_checkpoint.json").exists()
    logs = directory / "logs" / "restart_0"
    assert {"job.log", "ray-head-node1.log", "ray-worker-node2.log"} <= {p.name for p in logs.iterdir()}
    assert "ppo finished" in read(logs / "job.log")


@pytest.fixture(scope="module")
def preempted(slurm_cluster, assets, tmp_path_factory, uninterrupted):
    """One job, three runs: run 0 gets `scancel --signal=USR1 --batch` after its first step; run 1 has
    a one-minute time limit, so `--signal=B:USR1@900` fires at once; run 2 completes."""
    directory = tmp_path_factory.mktemp("grpo_preempted")
    job, output = submit(slurm_cluster, "grpo_32b.sbatch", directory, grpo_env(assets, directory), [], RL_SIZES)
    logs = directory / "logs"
    wait_for_text(slurm_cluster, job, directory / "run" / "metrics.jsonl", '"step": 1,', timeout_s=600)
    slurm_cluster.command("scancel", "--signal=USR1", "--batch", str(job))
    restart_soon(slurm_cluster, job, restarts=1)
    slurm_cluster.command("scontrol", "update", f"JobId={job}", "TimeLimit=1")
    wait_for_text(slurm_cluster, job, logs / "restart_1" / "job.log", "SIGUSR1", timeout_s=300)
    # Room to finish the step and save; and the next run is far from its limit (no third signal).
    slurm_cluster.command("scontrol", "update", f"JobId={job}", "TimeLimit=60")
    restart_soon(slurm_cluster, job, restarts=2)
    info = slurm_cluster.wait_for_end(job, timeout_s=600)
    runs = [read(logs / f"restart_{n}" / "job.log") for n in range(3)]
    return {"info": info, "output": read(output), "runs": runs, "dir": directory}


def stopped_at(log: str) -> int:
    found = re.findall(r"preempted: stopped after step (\d+)", log)
    assert len(found) == 1, log[-4000:]
    return int(found[0])


def test_usr1_checkpoints_requeues_and_the_job_completes(preempted):
    info, runs = preempted["info"], preempted["runs"]
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "2", preempted["output"][-4000:]
    first = stopped_at(runs[0])
    assert "exit 75 after a preemption: job" in runs[0] and "requeued" in runs[0]
    assert f"resumed from {preempted['dir'] / 'run' / 'checkpoints' / f'global_step_{first}'}" in runs[1]
    assert "ppo finished" in runs[2] and "preempted:" not in runs[2]


def test_time_limit_signal_checkpoints_and_the_next_run_resumes(preempted):
    runs = preempted["runs"]
    first, second = stopped_at(runs[0]), stopped_at(runs[1])
    assert first < second < STEPS
    assert "SIGUSR1 received" in runs[1]  # from Slurm's time-limit warning: nobody sent it by hand
    assert f"global_step_{second} (step {second})" in runs[2]


def test_resumed_steps_match_the_uninterrupted_job(preempted, uninterrupted):
    resumed = steps_logged(preempted["dir"] / "run")
    whole = {r["step"]: r for r in steps_logged(uninterrupted["dir"] / "run")}
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    for record in resumed:
        expected = whole[record["step"]]
        keys = [k for k in expected if not k.startswith(TIMED) and k != "step"]
        assert set(keys) <= set(record)
        for key in keys:
            assert record[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), (record["step"], key)
