"""What a run directory holds between runs, read without torch (the entry points check it before
anything starts, the trainers when they resume).

    {default_local_dir}/checkpoints/latest                           the newest complete step (written last)
    {default_local_dir}/checkpoints/global_step_N/                   that step's checkpoint
    {default_local_dir}/checkpoints/global_step_N/trainer_state.json RL: step, prompt order, KL coefficient
"""
import json
from pathlib import Path
from typing import Optional

STATE_FILE = "trainer_state.json"
STATE_KEYS = ("step", "prompt_order", "kl_coef", "nonfinite_steps")


class RunStateError(ValueError):
    """An unreadable resume state; the message names the file."""


def latest_step(checkpoints: Path) -> Optional[int]:
    """The step `checkpoints/latest` names, or None when there is none yet."""
    latest = Path(checkpoints) / "latest"
    if not latest.exists():
        return None
    text = latest.read_text(errors="replace").strip()
    if not text.isdigit():
        raise RunStateError(f"{latest}: holds {text[:40]!r}, not a step number (a damaged run directory: "
                            "fix or remove it, or set trainer.resume_mode=disable)")
    return int(text)


def read_state(step_dir: Path) -> dict:
    """The RL trainer state of one checkpoint step."""
    path = Path(step_dir) / STATE_FILE
    if not path.is_file():
        raise RunStateError(f"{path}: missing (not a complete RL checkpoint step)")
    try:
        state = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunStateError(f"{path}: not valid JSON ({error})") from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise RunStateError(f"{path}: missing {', '.join(missing)}")
    return state
