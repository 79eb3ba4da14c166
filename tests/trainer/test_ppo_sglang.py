"""GRPO with a real SGLang server as the rollout engine (CPU): the first step is on-policy with the
rollout's log-probs within bf16 tolerance of the trainer's, and a server killed mid-run is restarted
with the current weights while every step still trains on exactly train_batch_size x n samples."""
import json
import signal
import subprocess
import time

import psutil

from tests.rollout.sglang_support import requires_sglang
from tests.trainer.ppo_runs import ENV, ROOT, make_assets, metrics, ppo_command

pytestmark = requires_sglang


def sglang_servers(driver: psutil.Process):
    try:
        return [p for p in driver.children(recursive=True) if "sglang.launch_server" in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []


def test_sglang_rollout_on_policy_and_server_killed_mid_run(tmp_path):
    assets = make_assets(tmp_path / "assets", dtype="bfloat16")
    run_dir = tmp_path / "run"
    command = ppo_command(assets, run_dir, "actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.dtype=bfloat16",
                          "trainer.total_training_steps=3", "trainer.save_freq=-1", "trainer.test_freq=-1",
                          "trainer.val_before_train=false")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    driver = psutil.Process(process.pid)
    killed = None
    try:
        deadline = time.monotonic() + 600
        while process.poll() is None:
            assert time.monotonic() < deadline, "the run did not finish within 600 s"
            logged = run_dir / "metrics.jsonl"
            if killed is None and logged.exists() and '"step": 1' in logged.read_text():
                servers = sglang_servers(driver)
                assert servers, "no SGLang server among the run's processes"
                killed = servers[0].pid
                servers[0].send_signal(signal.SIGKILL)  # step 2's generation is starting now
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            for child in driver.children(recursive=True):
                child.kill()
            process.kill()
        process.wait(timeout=60)
    text = log.read_text()
    assert process.returncode == 0, text[-4000:]
    assert killed is not None
    steps = metrics(run_dir)[0]
    first = steps[1]
    assert first["actor/ppo_kl"] == 0.0 and first["actor/pg_clipfrac"] == 0.0
    # SGLang serves bf16 weights, the trainer computes in fp32.
    assert first["mismatch/abs_log_prob_diff_mean"] < 0.05, first["mismatch/abs_log_prob_diff_mean"]
    assert sorted(steps) == [1, 2, 3]
    assert all(s["batch/samples"] == 32 and s["group/size/mean"] == 4 for s in steps.values())
    assert steps[3]["rollout/restarts"] >= 1
    assert "died during" in text
    # After the restart the server got the current weights: the rollout is on-policy again.
    assert steps[3]["mismatch/abs_log_prob_diff_mean"] < 0.05
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
