"""SIGUSR1 -> a stop at the next step boundary: the flag of one process, re-sent signals ignored.
(Ranks agreeing on the step: tests/parallel/test_checkpoint_resume.py; end to end, on Slurm:
tests/launchers/test_slurm_grpo.py and test_slurm_sft.py.)"""
import subprocess
import sys

from tests.trainer.ppo_runs import ROOT

ONE_PROCESS = """
import os, signal
from harness.trainer import preemption
preemption.install()
assert not preemption.requested()
os.kill(os.getpid(), signal.SIGUSR1)
assert preemption.requested()
assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
os.kill(os.getpid(), signal.SIGUSR1)  # a launcher re-sending it: ignored, also while Python exits
print("alive")
"""


def test_signal_sets_the_flag_and_later_signals_are_ignored():
    result = subprocess.run([sys.executable, "-c", ONE_PROCESS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alive"
    assert result.stderr.count("SIGUSR1 received: checkpointing after the current step") == 1
