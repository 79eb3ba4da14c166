"""Rule scorers by data_source: 1.0 correct, 0.0 wrong; unknown sources and custom hooks."""
import sys
import types

import pytest

from harness.reward import UnknownScorerError, get_scorer, register_scorer, registered_sources, score


@pytest.mark.parametrize("solution, truth, expected", [
    ("3", "3", 1.0), (" 3\n", "3", 1.0), ("03", "3", 1.0), ("3", 3, 1.0),
    ("4", "3", 0.0), ("3 letters", "3", 0.0), ("", "3", 0.0), ("three", "3", 0.0), ("3.0", "3", 0.0),
])
def test_char_count(solution, truth, expected):
    assert score("char_count", solution, truth) == expected


@pytest.mark.parametrize("solution, truth, expected", [
    ("She sold 48/2 = 24 in May.\n48+24 = 72 in all.\n#### 72", "72", 1.0),
    ("#### 1,200", "1200", 1.0),
    ("The answer is 72.", "72", 1.0),                # no ####: the last number
    ("I think 5 then 72.0", "72", 1.0),
    ("#### 72 because 3 apples", "72", 1.0),          # the number right after ####
    ("#### $-4", "-4", 1.0),
    ("72 first, but #### 71", "72", 0.0),
    ("no number at all", "72", 0.0),
    ("#### 72", "not a number", 0.0),
])
def test_gsm8k(solution, truth, expected):
    assert score("openai/gsm8k", solution, truth) == expected


def test_unknown_source_lists_the_registered_ones():
    with pytest.raises(UnknownScorerError) as error:
        score("my/dataset", "1", "1")
    assert "no rule scorer for data_source 'my/dataset'; registered: char_count, gsm8k, openai/gsm8k" in str(error.value)
    assert {"char_count", "openai/gsm8k"} <= set(registered_sources())


def test_custom_module_function_hook_and_registration(monkeypatch):
    module = types.ModuleType("user_scorers")
    module.exact = lambda data_source, solution_str, ground_truth, extra_info=None: {"score": float(solution_str == ground_truth)}
    monkeypatch.setitem(sys.modules, "user_scorers", module)
    assert score("anything", "yes", "yes", custom="user_scorers:exact") == 1.0
    assert score("anything", "no", "yes", custom="user_scorers:exact") == 0.0
    with pytest.raises(UnknownScorerError, match="cannot load custom scorer 'user_scorers:missing'"):
        get_scorer("x", custom="user_scorers:missing")
    with pytest.raises(UnknownScorerError, match="not a 'module:function' path"):
        get_scorer("x", custom="user_scorers")

    register_scorer("test/upper")(lambda ds, s, gt, extra=None: float(s.upper() == gt))
    try:
        assert score("test/upper", "abc", "ABC") == 1.0
        with pytest.raises(ValueError, match="already registered"):
            register_scorer("test/upper")(lambda *args: 0.0)
    finally:
        from harness.reward import rule_scorers
        del rule_scorers._SCORERS["test/upper"]


def test_reward_room_imports_no_torch():
    import subprocess
    code = "import sys, harness.reward; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
