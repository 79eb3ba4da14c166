"""Preemption: SIGUSR1 asks a run to stop at the next step boundary, with a checkpoint.

Slurm sends it ahead of a time limit or a preemption (`#SBATCH --signal=B:USR1@600`, `scancel
--signal=USR1 --batch`); the launchers forward it to the RL driver, or to every SFT rank. The run
finishes its step, saves it, and the entry point exits with PREEMPTED_EXIT_CODE; the launchers
answer that code with `scontrol requeue`, and the requeued run resumes there (trainer.resume_mode=auto).

    preemption.install()                  # first thing in main: a signal before it would kill the process
    ... after each step:
    if preemption.requested():            # the RL driver (one process)
    if preemption.agreed():               # SFT ranks: all of them stop at the same step
        save; raise preemption.Preempted(step, checkpoint_dir)
"""
import signal
import sys

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL; launchers/slurm/lib.sh holds the same number
SIGNAL = signal.SIGUSR1
_requested = False


class Preempted(Exception):
    """The run stopped on request after saving `step` in `checkpoint` (the entry point exits 75)."""

    def __init__(self, step: int, checkpoint):
        super().__init__(f"preempted: stopped after step {step} with its checkpoint in {checkpoint}; exiting "
                         f"with {PREEMPTED_EXIT_CODE} so that the launcher requeues the job (resume_mode=auto)")
        self.step = step


def install() -> None:
    signal.signal(SIGNAL, _on_signal)


def _on_signal(signum, frame) -> None:
    global _requested
    _requested = True
    # Launchers re-send the signal until the run ends; from now on it is ignored: Python restores
    # SIG_DFL for handled signals while it exits, and a late one would then kill the process.
    signal.signal(signum, signal.SIG_IGN)
    print(f"{signal.Signals(signum).name} received: checkpointing after the current step, then exiting",
          file=sys.stderr, flush=True)


def requested() -> bool:
    return _requested


def agreed() -> bool:
    """True when any rank was asked to stop (one all-reduce): the signal reaches ranks at different
    moments, and they must stop at the same step to write one consistent checkpoint."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return _requested
    flag = torch.tensor([int(_requested)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
