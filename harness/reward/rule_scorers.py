"""Rule scorers: ``score(data_source, solution_str, ground_truth)`` -> 1.0 (correct) or 0.0 (wrong).

Looked up by each row's ``data_source`` (verl's names: gsm8k is ``openai/gsm8k``). A user's own
scorer is a ``module:function`` path with verl's custom-reward signature
``fn(data_source, solution_str, ground_truth, extra_info=None) -> float`` (or a dict with "score"),
given as ``custom`` to ``score``/``get_scorer`` or registered with ``@register_scorer("name")``.
Pure Python (no torch), so reward workers and evaluation import it cheaply.
"""
from __future__ import annotations

import importlib
import re
from decimal import Decimal, InvalidOperation
from typing import Callable

Scorer = Callable[..., float]
_SCORERS: dict[str, Scorer] = {}


class UnknownScorerError(ValueError):
    """No scorer for a data_source, or a ``module:function`` path that does not import."""


def register_scorer(*data_sources: str) -> Callable[[Scorer], Scorer]:
    def decorate(function: Scorer) -> Scorer:
        for name in data_sources:
            if name in _SCORERS:
                raise ValueError(f"a scorer for data_source {name!r} is already registered")
            _SCORERS[name] = function
        return function

    return decorate


def registered_sources() -> list[str]:
    return sorted(_SCORERS)


def load_scorer(path: str) -> Scorer:
    """The function at ``package.module:function``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnknownScorerError(f"custom scorer {path!r} is not a 'module:function' path")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UnknownScorerError(f"cannot load custom scorer {path!r}: {error}") from error
    if not callable(function):
        raise UnknownScorerError(f"custom scorer {path!r} is not callable")
    return function


def get_scorer(data_source: str, custom: str | None = None) -> Scorer:
    """The scorer of ``data_source``; ``custom`` (a ``module:function`` path) overrides every source."""
    if custom:
        return load_scorer(custom)
    if data_source not in _SCORERS:
        raise UnknownScorerError(f"no rule scorer for data_source {data_source!r}; registered: "
                                 f"{', '.join(registered_sources())} (or give a custom 'module:function' scorer)")
    return _SCORERS[data_source]


def score(data_source: str, solution_str: str, ground_truth, extra_info: dict | None = None, *,
          custom: str | None = None) -> float:
    result = get_scorer(data_source, custom)(data_source, solution_str, ground_truth, extra_info)
    return float(result["score"] if isinstance(result, dict) else result)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _as_number(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "").rstrip("."))
    except InvalidOperation:
        return None


def final_number(solution_str: str) -> str | None:
    """The answer of a worked solution: the number after the last ``####``, else the last number."""
    _, marker, tail = solution_str.rpartition("####")
    numbers = _NUMBER.findall(tail if marker else solution_str)
    if not numbers:
        return None
    return numbers[0] if marker else numbers[-1]


def _same_number(answer: str | None, ground_truth) -> bool:
    if answer is None:
        return False
    expected, given = _as_number(str(ground_truth)), _as_number(answer)
    return expected is not None and given is not None and expected == given


@register_scorer("char_count")
def char_count(data_source, solution_str: str, ground_truth, extra_info=None) -> float:
    """Exactly the count, surrounding whitespace allowed ("3", " 3\\n"; not "3 letters")."""
    answer = solution_str.strip()
    return 1.0 if re.fullmatch(r"-?\d+", answer) and _same_number(answer, ground_truth) else 0.0


@register_scorer("openai/gsm8k", "gsm8k")
def gsm8k(data_source, solution_str: str, ground_truth, extra_info=None) -> float:
    """The final number (after ``####``, else the last one) equals the ground truth numerically."""
    return 1.0 if _same_number(final_number(solution_str), ground_truth) else 0.0


def char_count_partial_credit(data_source, solution_str: str, ground_truth, extra_info=None) -> float:
    """A shaped training reward for char_count: 1 for the exact count, 0.5 for one off, else 0 (a
    denser signal than exact match; accuracy is still measured by `char_count`). Use it with
    `custom_reward_function.path=harness.reward.rule_scorers custom_reward_function.name=char_count_partial_credit`."""
    answer = solution_str.strip()
    if not re.fullmatch(r"-?\d+", answer):
        return 0.0
    return max(0.0, 1.0 - 0.5 * abs(int(answer) - int(ground_truth)))
