"""Metrics of a run: always `metrics.jsonl` in the run directory, plus console, tensorboard, wandb.

Only rank 0 of a job should create a Tracker. On resume, lines past the resumed step are dropped
from metrics.jsonl so a step logged before a crash is not counted twice.
"""
import json
import math
import os
import time
from typing import Dict, Iterable, Optional


class Tracker:
    def __init__(
        self,
        local_dir: str,
        loggers: Iterable[str] = ("console",),
        project: str = "harness",
        experiment: str = "run",
        config: Optional[dict] = None,
        total_steps: Optional[int] = None,
        resumed_step: int = 0,
    ):
        os.makedirs(local_dir, exist_ok=True)
        self.loggers = set(loggers)
        self.path = os.path.join(local_dir, "metrics.jsonl")
        _truncate_after(self.path, resumed_step)
        self._jsonl = open(self.path, "a")
        self._tensorboard = None
        self._wandb = None
        self._progress = None
        if "tensorboard" in self.loggers:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(os.path.join(local_dir, "tensorboard"))
        if "wandb" in self.loggers:
            import wandb

            # Offline unless the user configured wandb: runs never block on a login or the network.
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self._wandb = wandb.init(project=project, name=experiment, dir=local_dir, config=config or {}, mode=mode)
        if "console" in self.loggers:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[summary]}"),
            )
            self._task = self._progress.add_task(experiment, total=total_steps, completed=resumed_step, summary="")
            self._progress.start()
        self._start = time.time()

    def log(self, metrics: Dict[str, float], step: int) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(record, step=step)
        if self._progress is not None:
            shown = {k: v for k, v in record.items() if k != "step" and isinstance(v, float)}
            summary = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in list(shown.items())[:5])
            self._progress.update(self._task, completed=step, summary=summary)

    def close(self) -> None:
        self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._progress is not None:
            self._progress.stop()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def _truncate_after(path: str, step: int) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    staging = path + ".tmp"
    with open(staging, "w") as f:
        f.writelines(kept)
    os.replace(staging, path)


def read_metrics(local_dir: str):
    with open(os.path.join(local_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
