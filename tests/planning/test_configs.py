"""Every config under configs/ states its hardware in a `# planner:` line (the arguments of
tools/plan_parallelism.py) and fits it; a 32B config at TP=1 on 8 GPUs is refused."""
import shlex

import pytest

from tests.planning.support import REPO
from tests.planning.test_cli import plan_parallelism

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def planner_arguments(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("# planner:")]
    assert len(lines) == 1, f"{path.name}: needs exactly one '# planner: ARGS' line stating its hardware"
    return shlex.split(lines[0][len("# planner:"):])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_fits_its_stated_hardware(capsys, path):
    code = plan_parallelism.main(planner_arguments(path) + ["--config", str(path)])
    out = capsys.readouterr().out
    assert code == 0, f"{path.name} does not fit its stated hardware:\n{out}"


def test_shipped_configs_cover_the_stated_hardware():
    names = {p.name for p in CONFIGS}
    assert {"grpo_qwen2.5_32b.yaml", "grpo_qwen2.5_32b_split.yaml", "grpo_qwen2.5_7b.yaml"} <= names
    split = planner_arguments(REPO / "configs" / "grpo_qwen2.5_32b_split.yaml")
    assert split[split.index("--gpus") + 1] == "32"
    assert "placement: split" in (REPO / "configs" / "grpo_qwen2.5_32b_split.yaml").read_text()
