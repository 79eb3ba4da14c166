"""User hooks the RL tests plug in by `module:function` / file path, as users do."""
import os
import time

import torch


def length_score(data_source, solution_str, ground_truth, extra_info=None):
    """A graded, deterministic reward (a random tiny model is never right on char_count, and GRPO
    needs scores that differ within a group)."""
    return len(solution_str) / 10.0


def held_length_score(data_source, solution_str, ground_truth, extra_info=None):
    """length_score, held while the file HARNESS_TEST_HOLD names exists (at most 300 s): a test keeps
    the run inside a step until a signal has reached it, whatever the machine's speed."""
    hold, deadline = os.environ.get("HARNESS_TEST_HOLD"), time.monotonic() + 300
    while hold and os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.2)
    return length_score(data_source, solution_str, ground_truth, extra_info)


def flaky_score(data_source, solution_str, ground_truth, extra_info=None):
    """Raises on some answers; hangs once (the one call that creates the marker file: scorer
    processes run concurrently, so the creation must be atomic)."""
    try:
        os.close(os.open(os.environ["HARNESS_TEST_HANG_MARKER"], os.O_CREAT | os.O_EXCL))
        time.sleep(600)
    except FileExistsError:
        pass
    if len(solution_str) % 3 == 0:
        raise ValueError(f"cannot score {solution_str!r}")
    return len(solution_str) / 10.0


def nan_advantages(*, token_level_rewards, response_mask, **_):
    """An advantage estimator gone wrong: every advantage is NaN."""
    nan = torch.full_like(token_level_rewards, float("nan"))
    return nan, nan
