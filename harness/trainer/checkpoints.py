"""A training run's checkpoint directory: resume, periodic saves, best-by-validation, HF export.

    {default_local_dir}/checkpoints/global_step_{N}/   torch_dist model + optimizer, HF config/tokenizer
    {default_local_dir}/checkpoints/latest             the newest complete step (written last)
    {default_local_dir}/checkpoints/best.json          {"step", "val_loss"} of the best saved step
    {default_local_dir}/hf_best/                       the best step exported to HF at the end
"""
import json
import os
from pathlib import Path
from typing import Optional

import torch

from harness.checkpoint.torch_dist import MARKER, load_checkpoint, save_checkpoint
from harness.trainer import run_state


def _rank0() -> bool:
    return torch.distributed.get_rank() == 0


def write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text)
    os.replace(staging, path)


class CheckpointDirectory:
    def __init__(self, run_dir: str, model_source: str):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.model_source = Path(model_source)

    def step_dir(self, step: int) -> Path:
        return self.root / f"global_step_{step}"

    def latest_step(self) -> Optional[int]:
        return run_state.latest_step(self.root)

    def resume_or_initialise(self, engine, scheduler, resume_mode: str) -> dict:
        """Resume (model, optimizer, LR schedule, step, best) or load the initial weights."""
        source = None
        if resume_mode == "auto" and self.latest_step() is not None:
            source = self.step_dir(self.latest_step())
        elif resume_mode not in ("auto", "disable"):
            source = Path(resume_mode)
        if source is None:
            load_checkpoint(str(self.initial_weights()), engine.chunks)
            engine.optimizer.reload_model_params()
            return {"step": 0, "best": None}
        extra = load_checkpoint(str(source), engine.chunks, engine.optimizer)
        scheduler.load_state_dict(extra["scheduler"])
        return {"step": extra["step"], "best": extra.get("best")}

    def initial_weights(self) -> Path:
        """A torch_dist checkpoint of the starting model: the given one, or the HF model converted
        once (by rank 0, into the run directory) and reused by later runs."""
        if (self.model_source / MARKER).exists():
            return self.model_source
        converted = self.run_dir / "base_model_mcore"
        if _rank0() and not (converted / MARKER).exists():
            from harness.checkpoint.convert import hf_to_mcore

            hf_to_mcore(self.model_source, converted, force=True)
        torch.distributed.barrier()
        return converted

    def save(self, engine, scheduler, step: int, best: Optional[dict]) -> Path:
        path = self.step_dir(step)
        extra = {"step": step, "scheduler": scheduler.state_dict(), "best": best}
        save_checkpoint(str(path), engine.chunks, engine.optimizer, extra=extra)
        if _rank0():
            from harness.checkpoint.convert import copy_hf_side_files

            # The HF config and tokenizer travel with every checkpoint: it converts and evaluates alone.
            copy_hf_side_files(self.model_source, path, dtype=engine.config.params_dtype)
            write_atomically(self.root / "latest", str(step))
            if best is not None and best["step"] == step:
                write_atomically(self.root / "best.json", json.dumps(best))
        torch.distributed.barrier()
        return path

    def export_best(self, best: Optional[dict], last_step: int) -> Path:
        """The best saved step (the last one without validation) as an HF model directory."""
        step = best["step"] if best is not None else last_step
        target = self.run_dir / "hf_best"
        if _rank0():
            from harness.checkpoint.convert import mcore_to_hf

            mcore_to_hf(self.step_dir(step), target, force=True)
            write_atomically(self.run_dir / "hf_best.json", json.dumps({"step": step, **(best or {})}))
        torch.distributed.barrier()
        return target
