"""TP=2, PP=2, TP=2+SP and PP=2 x VPP=2 train exactly like TP=1/PP=1 from the same full weights:
same loss and same (full, gathered) gradients for two distributed-optimizer steps, per architecture."""
import pytest

from tests.parallel.rank_checks import LAYOUTS

TOLERANCE = 1e-5


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_parallel_layouts_match_tp1_pp1(rank_group, arch):
    reports = rank_group.run("harness.selfcheck:layout_parity", timeout=300, arch=arch)
    for layout in LAYOUTS:
        covered = set()
        for rank, report in enumerate(reports):
            result = report[layout]
            where = f"{arch} {layout} rank {rank}"
            assert result["loss_diff"] <= TOLERANCE, f"{where}: losses {result['losses']} vs {report['reference_losses']}"
            assert result["grad_diff"] <= TOLERANCE, f"{where}: grad differs by {result['grad_diff']:.3g} at {result['worst_grad']}"
            assert result["grad_norm_diff"] <= TOLERANCE, where
            # The steps changed the model (a layout that never updates would match trivially).
            assert result["loss_changed"] > 1e-4, where
            covered |= set(result["compared"])
        # Every parameter of the full model was compared on some pipeline stage.
        assert covered == set(reports[0]["all_params"]), f"{arch} {layout}: not compared: {set(reports[0]['all_params']) - covered}"


def test_per_token_loss_does_not_depend_on_micro_batching(rank_group):
    """SFT's loss (summed tokens / step token count): 1, 3 or 6 micro-batches of different lengths
    give the same loss and gradients, so batching by token budget changes nothing but speed."""
    for rank, report in enumerate(rank_group.run("tests.parallel.rank_checks:token_loss_is_split_invariant", timeout=300)):
        for split, result in report.items():
            assert result["loss_diff"] <= 1e-6, f"rank {rank} {split}: {result}"
            assert result["grad_diff"] <= 1e-6, f"rank {rank} {split}: {result}"
