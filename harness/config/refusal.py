"""How an entry point reports bad input: one line, rank 0 only, exit code 2, and under torchrun the same
line as the root cause of torchrun's failure summary."""
import json
import os
import sys
import time
from pathlib import Path

LOCAL_RANK0_WAIT_S = 30.0  # under torchrun: how long the other ranks wait for local rank 0 to report


def is_rank_zero() -> bool:
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def refuse(message: str) -> int:
    """Reports bad input the way every entry point does: one line on stderr (rank 0 only, under torchrun
    or srun), and the same line in torchrun's error file so its failure summary names it instead of
    pointing at tracebacks. Returns the exit code, 2."""
    if is_rank_zero():
        print(message, file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        # torch.distributed.elastic's error-file layout; its summary prints `py_callstack` as the traceback.
        record = {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}
        Path(error_file).write_text(json.dumps({"message": record}))
        if os.environ.get("LOCAL_RANK", "0") != "0":
            _wait_for_local_rank0(Path(error_file))
    return 2


def _wait_for_local_rank0(error_file: Path) -> None:
    """Every rank finds the same problem, and torchrun stops the others when the first one exits: the
    other ranks wait (bounded) until local rank 0 has reported (its error file, beside theirs in
    torchrun's attempt directory), so rank 0's line is printed and is the root cause."""
    theirs = error_file.parent.parent / "0" / error_file.name
    deadline = time.monotonic() + LOCAL_RANK0_WAIT_S
    while not theirs.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # rank 0 exits right after writing it
