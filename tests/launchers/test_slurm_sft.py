"""`sbatch launchers/sft_32b.sbatch` on the two-node cluster: one srun rank per node (TP=2 across the
nodes, on gloo), preempted by `scancel --signal=USR1 --batch` as it starts: both ranks stop
at the same step with one checkpoint, the job is requeued, resumes and completes."""
import json
import re

import pytest

from tests.launchers.slurm_jobs import launcher_env, read, restart_soon, spare_port, submit, wait_for_text
from tests.trainer.ppo_runs import make_assets

pytestmark = pytest.mark.timeout(900)
STEPS = 12  # tiny steps: the signal, sent at the start, must arrive before the last one


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("slurm_sft_assets"))


def test_sft_on_two_nodes_is_preempted_requeued_and_completes(slurm_cluster, assets, tmp_path):
    env = launcher_env(tmp_path, CONFIG="configs/sft_tiny_cpu.yaml", MODEL_PATH=str(assets / "model"),
                       TRAIN_FILES=str(assets / "data" / "sft_train.parquet"))
    env["MASTER_PORT"] = spare_port()
    env["PREEMPT_RESEND_S"] = "1"
    sizes = ["megatron.tensor_model_parallel_size=2", "data.train_batch_size=32", "data.micro_batch_size_per_gpu=8",
             f"trainer.total_training_steps={STEPS}", "trainer.save_freq=-1", "trainer.test_freq=-1",
             "trainer.logger=[console]", "trainer.export_hf=false"]
    job, output = submit(slurm_cluster, "sft_32b.sbatch", tmp_path, env, ["--ntasks-per-node=1"], sizes)
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    # Signalled before training starts, however fast the machine: srun passes it to the ranks, which
    # are shielded until their handler is set and get the re-sends (every PREEMPT_RESEND_S).
    wait_for_text(slurm_cluster, job, output, "SFT on 2 rank(s)", timeout_s=300)
    slurm_cluster.command("scancel", "--signal=USR1", "--batch", str(job))
    restart_soon(slurm_cluster, job, restarts=1)
    info = slurm_cluster.wait_for_end(job, timeout_s=600)
    first, second = read(logs / "restart_0" / "job.log"), read(logs / "restart_1" / "job.log")
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", read(output)[-4000:]
    assert f"SFT on 2 rank(s), rank 0 at 127.0.0.2:{env['MASTER_PORT']}" in first
    # One rank on each node: the job step's tasks, from accounting.
    steps = slurm_cluster.command("sacct", "-j", f"{job}.0", "-n", "-P", "-o", "NodeList,NTasks").stdout.split()
    assert "node[1-2]|2" in steps, steps
    stopped = re.findall(r"preempted: stopped after step (\d+)", first)
    assert len(stopped) == 1, first[-4000:]  # printed once, by rank 0
    stop = int(stopped[0])
    assert 1 <= stop < STEPS and "exit 75 after a preemption" in first
    assert "sft finished" in second
    with open(run_dir / "metrics.jsonl") as f:
        logged = [json.loads(line)["step"] for line in f]
    assert logged == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / f"global_step_{stop}").is_dir()  # written by both ranks at the agreed step
    assert (checkpoints / "latest").read_text() == str(STEPS)
