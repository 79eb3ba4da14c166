"""Run metrics: metrics.jsonl always, console progress, tensorboard, wandb."""
from harness.tracking.tracker import Tracker, read_metrics

__all__ = ["Tracker", "read_metrics"]
