"""Supervised fine-tuning: `python -m harness.main_sft [--config FILE] key=value ...`

Runs as one process, or with N ranks under `torchrun --nproc_per_node N -m harness.main_sft ...` or
`srun` (MASTER_ADDR / MASTER_PORT exported). Keys follow verl's SFT trainer (`data.train_files`,
`optim.lr`, `trainer.total_epochs`, ...) plus `megatron.*` parallel sizes; see harness/config/sft.py.
"""
import os
import sys

from harness.config.loader import config_from_command_line
from harness.config.sft import SFTConfig
from harness.trainer.memory_check import memory_check


def main(argv=None) -> int:
    config = config_from_command_line(SFTConfig, sys.argv[1:] if argv is None else argv)
    if config is None:
        return 2
    if not memory_check(config):  # the planner's explanation is printed
        return 2
    from harness.data import DataError
    from harness.trainer.sft import run_sft

    try:
        result = run_sft(config)
    except DataError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"data error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(f"sft finished: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
