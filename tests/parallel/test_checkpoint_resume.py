"""Save model + distributed optimizer at TP=2, load at TP=1/DP=2 and at PP=2: the resumed steps equal
the uninterrupted run's, and AdamW's step counter is right (megatron-core alone gives every parameter
one shared counter, which then advances once per parameter)."""
import os

import pytest

from harness.checkpoint.torch_dist import CheckpointError, load_checkpoint

LOSS_TOLERANCE = 1e-6


def test_resume_at_other_layouts_matches_uninterrupted_run(rank_group, tmp_path):
    directory = str(tmp_path / "ckpt")
    reports = rank_group.run(
        "tests.parallel.rank_checks:resume_across_layouts",
        timeout=300,
        arch="qwen3",
        directory=directory,
        save_layout="tp2",
        load_layouts=["tp1_dp2", "pp2"],
    )
    assert os.path.isfile(os.path.join(directory, "harness_checkpoint.json"))
    assert not os.path.exists(directory + ".tmp"), "staging directory left behind"
    for rank, report in enumerate(reports):
        assert report["uninterrupted_adam_steps"] == [3]
        for layout in ("tp1_dp2", "pp2"):
            resumed = report[layout]
            for step in (1, 2):
                diff = abs(resumed["losses"][step] - report["uninterrupted"][step])
                assert diff <= LOSS_TOLERANCE, f"rank {rank} {layout} step {step + 1}: loss differs by {diff:.3g}"
            # Saved after step 1, resumed for steps 2 and 3.
            assert resumed["adam_steps"] == [3], f"rank {rank} {layout}: AdamW steps {resumed['adam_steps']}"
            assert resumed["extra"] == {"iteration": 1}


def test_incomplete_checkpoint_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metadata.json").write_text("{}")
    with pytest.raises(CheckpointError, match="harness_checkpoint.json is missing"):
        load_checkpoint(str(tmp_path / "half"), chunks=[])


def test_every_rank_stops_at_the_same_step_when_one_rank_got_sigusr1(rank_group):
    """Preemption reaches ranks at different moments; they must stop together to write one checkpoint."""
    check = "tests.parallel.rank_checks:signal_one_rank"
    assert rank_group.run(check, signalled_rank=1) == [True, True]
    assert rank_group.run(check, signalled_rank=0) == [True, True]
    assert rank_group.run(check, signalled_rank=-1) == [False, False]
