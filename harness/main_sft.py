"""Supervised fine-tuning: `python -m harness.main_sft [--config FILE] key=value ...`

Runs as one process, or with N ranks under `torchrun --nproc_per_node N -m harness.main_sft ...` or
`srun` (MASTER_ADDR / MASTER_PORT exported). Keys follow verl's SFT trainer (`data.train_files`,
`optim.lr`, `trainer.total_epochs`, ...) plus `megatron.*` parallel sizes; see harness/config/sft.py.
"""
import sys

from harness.config.loader import config_from_command_line
from harness.config.sft import SFTConfig
from harness.trainer import preemption


def main(argv=None) -> int:
    preemption.install()  # SIGUSR1 on any rank: every rank checkpoints after the current step, exits 75
    config = config_from_command_line(SFTConfig, sys.argv[1:] if argv is None else argv)
    if config is None:
        return 2
    from harness.data import DataError
    from harness.trainer.sft import run_sft

    try:
        result = run_sft(config)
    except DataError as e:
        if _rank0():
            print(f"data error: {e}", file=sys.stderr)
        return 2
    except preemption.Preempted as e:
        if _rank0():
            print(e, file=sys.stderr)
        return preemption.PREEMPTED_EXIT_CODE
    if _rank0():
        print(f"sft finished: {result}")
    return 0


def _rank0() -> bool:
    """Rank 0 of the process group (torchrun's RANK or srun's SLURM_PROCID), or a lone process."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


if __name__ == "__main__":
    sys.exit(main())
