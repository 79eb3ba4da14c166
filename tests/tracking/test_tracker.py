"""metrics.jsonl is always written; tensorboard and wandb (offline) write their files; a resume drops
the lines past the resumed step so no step is counted twice."""
import glob
import os

from harness.tracking import Tracker, read_metrics


def test_jsonl_tensorboard_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = Tracker(str(tmp_path), loggers=["console", "tensorboard", "wandb"], experiment="t", total_steps=3)
    for step in (1, 2, 3):
        tracker.log({"train/loss": 1.0 / 2 ** (step - 1), "val/loss": float("nan")}, step)  # exact in float32
    tracker.close()
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[1]["train/loss"] == 0.5 and records[0]["val/loss"] == "nan"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(tmp_path, "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == [1.0, 0.5, 0.25]
    assert glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*", "run-*.wandb"))


def test_resume_drops_steps_after_the_checkpoint(tmp_path):
    first = Tracker(str(tmp_path), loggers=[])
    for step in range(1, 6):
        first.log({"train/loss": float(step)}, step)
    first.close()  # crashed after step 5; the checkpoint was at step 3
    resumed = Tracker(str(tmp_path), loggers=[], resumed_step=3)
    resumed.log({"train/loss": 4.5}, 4)
    resumed.close()
    assert [(r["step"], r["train/loss"]) for r in read_metrics(str(tmp_path))] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5)]
