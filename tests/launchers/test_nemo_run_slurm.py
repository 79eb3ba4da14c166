"""The NeMo-Run experiments with the Slurm executor against the two-node test cluster
(tests/support/slurm_cluster.py; NeMo-Run reads job state from its accounting), submitted through a
LocalTunnel as on a login node:
- SFT: one torchrun per node (NeMo-Run's torchrun launcher), two data-parallel ranks over both nodes;
- GRPO: the task runs launchers/slurm/ray_cluster.sh, the bring-up launchers/grpo_32b.sbatch uses,
  from the srun step NeMo-Run wraps every task in. While Ray comes up the job gets Slurm's step
  signal (what `--preempt-signal USR1@900` sends before the time limit): Ray survives it, main_ppo
  checkpoints and exits 75, NeMo-Run requeues the job (`--retries 1`), the next run resumes and
  completes.
Both end SUCCEEDED, and their logs are read back with `nemo experiment logs` from a fresh process.
The jobs run the checkout's committed HEAD (NeMo-Run's GitArchivePackager)."""
import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launchers.local_pods import ROOT, VENV_BIN
from tests.launchers.slurm_jobs import RL_SIZES, launcher_env, read, restart_soon, spare_port

RANKS_ON = re.compile(r"Ray cluster of (\d+) node\(s\) \(([^)]*)\); training ranks on (.*)")


def nemo_env(cluster, directory: Path) -> dict:
    """The submitting shell: the cluster's SLURM_CONF, this venv first on PATH (sbatch exports it to
    the job), Ray's ports free on this machine, NeMo-Run's home in the test's folder."""
    return {**cluster.env, **launcher_env(directory), "NEMORUN_HOME": str(directory / "nemo_home"),
            "PATH": f"{VENV_BIN}:{cluster.env['PATH']}", "COLUMNS": "400"}


def start(script: str, arguments, env, directory: Path) -> subprocess.Popen:
    output = open(directory / f"{script}.out", "w")
    return subprocess.Popen([sys.executable, f"launchers/nemo_run/{script}.py", "--executor", "slurm",
                             "--partition", "debug", *arguments], cwd=ROOT, env=env, stdout=output,
                            stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen, script: str, directory: Path, timeout_s: float) -> str:
    """Waits for the experiment script; returns the experiment id once its task SUCCEEDED (the state
    the script read back with `Experiment.from_id(...).status()`, i.e. from sacct)."""
    process.wait(timeout=timeout_s)
    text = read(directory / f"{script}.out")
    found = re.search(r"^experiment (\S+): (\w+) (\w+)$", text, re.MULTILINE)
    assert process.returncode == 0 and found, text[-4000:]
    experiment_id, task, state = found.groups()
    assert (task, state) == (script, "SUCCEEDED")
    return experiment_id


def nemo_logs(experiment_id: str, env) -> str:
    """`nemo experiment logs ID 0` from a fresh process (NeMo-Run's reconstruction from its files)."""
    logs = subprocess.run([f"{VENV_BIN}/nemo", "experiment", "logs", experiment_id, "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert logs.returncode == 0, logs.stderr[-2000:]
    return logs.stdout + logs.stderr


def task_log(process: subprocess.Popen, directory: Path, script: str, timeout_s: float = 240):
    """(job id, the task's folder) once the first run's srun log exists (NeMo-Run names it
    log-harness-<task>_<job>_<restart>.out)."""
    deadline = time.monotonic() + timeout_s
    pattern = f"nemo_home/experiments/harness-{script}/*/{script}/log-harness-{script}_*_0.out"
    while not (found := sorted(directory.glob(pattern))):
        ended = process.poll() is not None
        assert not ended and time.monotonic() < deadline, (
            f"no {pattern} {'before the experiment script ended' if ended else f'within {timeout_s:.0f} s'}:\n"
            f"{read(directory / f'{script}.out')[-4000:]}")
        time.sleep(0.5)
    job = int(re.search(r"_(\d+)_0\.out$", found[0].name).group(1))
    return job, found[0].parent


@contextlib.contextmanager
def stopped_on_failure(cluster, process: subprocess.Popen):
    """A failing test stops its experiment script and its jobs (they would hold the nodes)."""
    try:
        yield
    except BaseException:
        process.kill()
        cluster.command("scancel", "--user=root", check=False)
        raise


def wait_for_line(process, path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in read(path):
        assert process.poll() is None, f"the experiment ended before {text!r} appeared:\n{read(path)[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {path} within {timeout_s:.0f} s:\n{read(path)[-4000:]}"
        time.sleep(0.2)


def job_steps(cluster, job: int):
    """[(step id, step name, node list)] of every step of the job, from accounting."""
    text = cluster.command("sacct", "-j", str(job), "-n", "-P", "-o", "JobID,JobName,NodeList").stdout
    return [tuple(line.split("|")) for line in text.splitlines() if line.strip()]


@pytest.mark.timeout(360)
def test_sft_experiment_runs_a_rank_on_each_node(slurm_cluster, tiny_assets, tmp_path):
    env = nemo_env(slurm_cluster, tmp_path)
    run_dir = tmp_path / "run"
    process = start("sft", [
        "--config", "configs/sft_tiny_cpu.yaml", "--device", "cpu", "--nodes", "2", "--gpus-per-node", "1",
        "--rdzv-port", spare_port(),  # a free port, above the Ray blocks other tests' jobs may take
        "megatron.tensor_model_parallel_size=1",  # tensor-parallel groups stay within a node: DP=2 over both
        f"data.train_files={tiny_assets / 'data' / 'sft_train.parquet'}",
        f"data.val_files={tiny_assets / 'data' / 'sft_val.parquet'}", f"model.partial_pretrain={tiny_assets / 'model'}",
        f"trainer.default_local_dir={run_dir}", "trainer.total_training_steps=2", "data.train_batch_size=8",
        "data.micro_batch_size_per_gpu=4", "trainer.logger=[console]", "trainer.export_hf=false",
    ], env, tmp_path)
    with stopped_on_failure(slurm_cluster, process):
        job, _ = task_log(process, tmp_path, "sft")
        experiment_id = finished(process, "sft", tmp_path, timeout_s=300)
    # One torchrun per node: the job step's tasks, from accounting.
    steps = slurm_cluster.command("sacct", "-j", str(job), "-n", "-P", "-o", "JobName,NodeList,NTasks").stdout.split()
    assert "torchrun|node[1-2]|2" in steps, steps
    assert (run_dir / "checkpoints" / "global_step_2").is_dir(), sorted(run_dir.rglob("*"))
    logs = nemo_logs(experiment_id, env)
    assert "sft finished: {'steps': 2" in logs
    assert "group_rank=0" in logs and "group_rank=1" in logs
    with open(run_dir / "metrics.jsonl") as f:
        assert [r["step"] for r in map(json.loads, f) if "train/loss" in r] == [1, 2]


@pytest.mark.timeout(540)
def test_grpo_experiment_spans_both_nodes_survives_a_step_signal_and_resumes(slurm_cluster, tiny_assets, tmp_path):
    env = nemo_env(slurm_cluster, tmp_path)
    run_dir = tmp_path / "run"
    steps = 2
    process = start("grpo", [
        "--config", "configs/grpo_tiny_cpu.yaml", "--device", "cpu", "--nodes", "2", "--gpus-per-node", "1",
        "--retries", "1", f"data.train_files={tiny_assets / 'data' / 'rl_train.parquet'}",
        f"actor_rollout_ref.model.path={tiny_assets / 'model'}", f"trainer.default_local_dir={run_dir}",
        *RL_SIZES, f"trainer.total_training_steps={steps}",
    ], env, tmp_path)
    with stopped_on_failure(slurm_cluster, process):
        job, task_dir = task_log(process, tmp_path, "grpo")
        first = task_dir / f"log-harness-grpo_{job}_0.out"
        # Ray's head is up and the other node's worker starting (Slurm may make either node the first):
        # the step signal reaches every process of every step (Ray's, the bring-up's helpers); only
        # main_ppo may act on it.
        wait_for_line(process, first, "starting the Ray worker at 127.0.0.", timeout_s=240)
        slurm_cluster.command("scancel", "--signal=USR1", str(job))
        restart_soon(slurm_cluster, job, restarts=1, timeout_s=240)
        experiment_id = finished(process, "grpo", tmp_path, timeout_s=360)
    info = slurm_cluster.show_job(job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    # Accounting: the allocation is both nodes, and the second run's steps (accounting keeps the last
    # run's) include a Ray node on node2 alone, beside the head's on node1.
    accounted = job_steps(slurm_cluster, job)
    assert (str(job), "harness-grpo", "node[1-2]") in accounted, accounted
    assert {"node1", "node2"} <= {nodes for _, _, nodes in accounted}, accounted
    # The task is ray_cluster.sh itself, run by NeMo-Run's srun (one task on the first node).
    batch = next(tmp_path.glob("nemo_home/experiments/harness-grpo/*/grpo_sbatch.sh")).read_text()
    assert re.search(r"^srun .* --nodes=1 --ntasks=1 --overlap bash launchers/slurm/ray_cluster.sh -- python -m "
                     r"harness\.main_ppo ", batch, re.MULTILINE), batch
    assert "#SBATCH --signal=USR1@900" in batch and "#SBATCH --exclusive" in batch

    # NeMo-Run 0.11.1 shows the first run's log (it lists log-*_<job>_*.out and takes the first).
    runs = [nemo_logs(experiment_id, env), read(task_dir / f"log-harness-grpo_{job}_1.out")]
    for log in runs:
        assert "Ray is up on 2 node(s): node1=127.0.0.2 node2=127.0.0.3" in log, log[-4000:]
        placed = RANKS_ON.search(log)
        assert placed and sorted(placed.group(2).split(", ")) == ["127.0.0.2", "127.0.0.3"], log[-4000:]
        assert sorted(placed.group(3).strip().split(", ")) == ["127.0.0.2", "127.0.0.3"]  # one rank per node
        rollout = re.search(r"rollout: (.*)", log)  # one rollout worker per node (RolloutFleet)
        assert rollout and sorted(re.findall(r"127\.0\.0\.\d+", rollout.group(1))) == ["127.0.0.2", "127.0.0.3"], log[-4000:]
        assert "attempt 2 of" not in log, "a Ray node died of the signal and was restarted"
    assert "ray_cluster.sh" in runs[0] and "SIGUSR1: preemption or time limit ahead" in runs[0]
    stopped = re.findall(r"preempted: stopped after step (\d+)", runs[0])
    assert len(stopped) == 1 and 1 <= int(stopped[0]) < steps, runs[0][-4000:]
    assert f"resumed from {run_dir / 'checkpoints' / f'global_step_{stopped[0]}'}" in runs[1]
    assert f"ppo finished: {{'steps': {steps}" in runs[1]
    with open(run_dir / "metrics.jsonl") as f:
        logged = [r["step"] for r in map(json.loads, f) if "actor/pg_loss" in r]
    assert logged == list(range(1, steps + 1)), "a step is missing or logged twice"
    assert (run_dir / "checkpoints" / f"global_step_{steps}").is_dir(), sorted(run_dir.rglob("global_step_*"))


@pytest.mark.timeout(180)
def test_ray_cluster_sh_as_several_tasks_of_a_step_refuses_at_once(slurm_cluster, tmp_path):
    """From a job step (NeMo-Run's way) it must be the step's only task: every task would otherwise
    start a Ray cluster of its own over the allocation."""
    output = tmp_path / "slurm.out"
    job = slurm_cluster.sbatch(["--nodes=2", f"--output={output}", "--wrap",
                                f"srun --ntasks=2 bash {ROOT}/launchers/slurm/ray_cluster.sh -- true"],
                               env=launcher_env(tmp_path), cwd=tmp_path)
    info = slurm_cluster.wait_for_end(job, timeout_s=120)
    text = read(output)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "64:0", text
    errors = [line for line in text.splitlines() if re.match(r"ray_cluster\.sh \[\d\d:\d\d:\d\d\]: error: ", line)]
    assert len(errors) == 2, text  # one per task, each naming the step
    assert all(f"started as 2 tasks of step {job}.0: run it as one task (srun --nodes=1 --ntasks=1 --overlap ...)"
               in line for line in errors), text
    assert "starting Ray" not in text


@pytest.mark.timeout(180)
def test_a_submission_sbatch_refuses_is_one_line(slurm_cluster, tmp_path):
    env = nemo_env(slurm_cluster, tmp_path)
    result = subprocess.run([sys.executable, "launchers/nemo_run/sft.py", "--executor", "slurm", "--partition", "nosuch",
                             "--config", "configs/sft_tiny_cpu.yaml", "--device", "cpu", "--gpus-per-node", "2",
                             "data.train_files=t",
                             "model.partial_pretrain=m"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=150)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout[-2000:] + result.stderr[-4000:]
    assert lines[0].startswith("sft: sbatch exited 1: ") and "invalid partition specified: nosuch" in lines[0]
    assert "Traceback" not in result.stdout
