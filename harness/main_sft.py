"""Supervised fine-tuning: `python -m harness.main_sft [--config FILE] key=value ...`

Runs as one process, or with N ranks under `torchrun --nproc_per_node N -m harness.main_sft ...` or
`srun` (MASTER_ADDR / MASTER_PORT exported). Keys follow verl's SFT trainer (`data.train_files`,
`optim.lr`, `trainer.total_epochs`, ...) plus `megatron.*` parallel sizes; see harness/config/sft.py.
Bad input is refused in one line with exit code 2 before any process group (harness/trainer/preflight.py;
under torchrun each rank checks before it joins, rank 0 prints, and torchrun's failure summary names
the same line); `--preflight` checks and exits.
"""
import sys

from harness.config.loader import config_from_command_line
from harness.config.refusal import is_rank_zero, refuse
from harness.config.sft import SFTConfig
from harness.trainer import preemption, preflight
from harness.trainer.memory_check import memory_check


def main(argv=None) -> int:
    preemption.install()  # SIGUSR1 on any rank: every rank checkpoints after the current step, exits 75
    argv = sys.argv[1:] if argv is None else list(argv)
    config = config_from_command_line(SFTConfig, [a for a in argv if a != "--preflight"])
    if config is None or preflight.refused(preflight.check_sft, config):
        return 2
    if not memory_check(config):  # the planner's explanation is printed
        return 2
    if "--preflight" in argv:
        return 0
    from harness.data import DataError
    from harness.trainer.sft import run_sft

    try:
        result = run_sft(config)
    except DataError as e:
        return refuse(f"data error: {e}")
    except preemption.Preempted as e:
        if is_rank_zero():
            print(e, file=sys.stderr)
        return preemption.PREEMPTED_EXIT_CODE
    if is_rank_zero():
        print(f"sft finished: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
