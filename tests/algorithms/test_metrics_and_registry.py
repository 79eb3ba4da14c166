"""Metrics helpers by hand; the registries' plug-in paths, error messages and the CLI listing."""
import ast
import pathlib
import subprocess
import sys

import pytest
import torch

from harness.algorithms import (ADV_ESTIMATORS, POLICY_LOSSES, Registry, UnknownNameError, batch_metrics,
                                compute_advantage, compute_policy_loss, entropy_mean, group_reward_metrics,
                                load_callable)
from harness.algorithms.__main__ import KINDS


def test_group_reward_metrics_by_hand():
    # Groups: a = 1, 1 (all best), b = 0, 0 (all worst), c = 0, 1 (mixed, std sqrt(1/2)).
    metrics = group_reward_metrics(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), ["a", "b", "a", "b", "c", "c"])
    assert metrics["group/all_equal_fraction"].item() == pytest.approx(2 / 3)
    assert metrics["group/all_best_fraction"].item() == pytest.approx(1 / 3)
    assert metrics["group/all_worst_fraction"].item() == pytest.approx(1 / 3)
    assert metrics["group/reward_std/mean"].item() == pytest.approx(0.5 ** 0.5 / 3)
    assert metrics["group/reward_range/mean"].item() == pytest.approx(1 / 3)
    assert metrics["group/size/mean"].item() == 2


def test_batch_metrics_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    scores = torch.tensor([[0.0, 1.0, 9.0], [0.0, 0.0, 3.0]])
    advantages = torch.tensor([[1.0, 2.0, 50.0], [-1.0, 0.0, 4.0]])
    metrics = batch_metrics(token_level_scores=scores, token_level_rewards=scores - 0.5, advantages=advantages,
                            returns=advantages, response_mask=mask)
    assert metrics["critic/score/mean"].item() == pytest.approx(2.0)  # sequence scores 1 and 3
    assert metrics["critic/rewards/mean"].item() == pytest.approx((0.0 + 1.5) / 2)
    assert metrics["critic/advantages/max"].item() == 4.0  # 50 is padding
    assert metrics["critic/advantages/min"].item() == -1.0
    assert metrics["critic/advantages/mean"].item() == pytest.approx(6 / 5)
    assert metrics["response_length/mean"].item() == 2.5
    assert metrics["response_length/clip_ratio"].item() == 0.5
    assert entropy_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]])).item() == 2.0


def constant_advantage(token_level_rewards, response_mask):
    """A user's estimator, loaded from the config by its 'module:function' path."""
    return response_mask.float() * 7, response_mask.float()


def test_user_functions_load_by_module_path():
    advantages, _ = compute_advantage(f"{__name__}:constant_advantage", token_level_rewards=torch.zeros(2, 2),
                                      response_mask=torch.ones(2, 2), group_index=torch.tensor([0, 0]))
    assert torch.all(advantages == 7)
    loss, _ = compute_policy_loss("harness.algorithms.policy_losses:ppo_clip_loss", old_log_prob=torch.zeros(1, 1),
                                  log_prob=torch.zeros(1, 1), advantages=torch.ones(1, 1),
                                  response_mask=torch.ones(1, 1))
    assert loss.item() == -1.0
    with pytest.raises(UnknownNameError, match="cannot import module 'no_such_module'"):
        load_callable("no_such_module:f")
    with pytest.raises(UnknownNameError, match="has no attribute 'nope'"):
        load_callable("harness.algorithms:nope")


def test_registering_a_variant_and_duplicate_names():
    registry = Registry("thing")
    registry.register("a", "alias_a")(len)
    assert registry.get("alias_a") is len and registry.accepted_names() == ["a", "alias_a"]
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        registry.register("a")(abs)
    with pytest.raises(UnknownNameError, match="unknown thing 'b'; registered: a"):
        registry.get("b")


def test_cli_lists_every_registered_name_by_kind():
    output = subprocess.run([sys.executable, "-m", "harness.algorithms"], capture_output=True, text=True,
                            check=True, timeout=120).stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in output] == list(KINDS)
    listed = {line.split(": ")[0]: line.split(": ")[1].split(", ") for line in output}
    assert listed["estimators"] == ADV_ESTIMATORS.names()
    assert set(listed["estimators"]) >= {"gae", "grpo", "rloo", "reinforce_plus_plus",
                                         "reinforce_plus_plus_baseline", "remax", "opo", "gpg", "prime"}
    assert set(POLICY_LOSSES.names()) <= set(listed["policy_losses"])
    assert listed["aggregation_modes"] == ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean",
                                           "seq-mean-token-sum-norm"]
    assert {"k1", "k2", "k3", "low_var_kl", "abs", "mse"} <= set(listed["kl_estimators"])
    assert {"tis", "token_mis", "seq_mis", "token_rs", "seq_rs"} <= set(listed["mismatch_corrections"])


def test_algorithms_imports_only_torch_and_stdlib():
    root = pathlib.Path(__file__).resolve().parents[2] / "harness" / "algorithms"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ("torch", "__future__") or top in sys.stdlib_module_names, (path.name, name)
