"""A small named registry: every algorithm variant is looked up by the name the config gives.

A name containing ``:`` is a ``module:function`` path and is imported instead, so users plug their
own estimator or loss in from the config without touching the harness.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable


class UnknownNameError(ValueError):
    """A config named something no registry entry (and no importable path) provides."""


def load_callable(path: str) -> Callable:
    """Import ``package.module:function`` (the attribute may be dotted: ``module:Class.method``)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnknownNameError(f"{path!r} is not a 'module:function' path")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise UnknownNameError(f"cannot import module {module_name!r} of {path!r}: {error}") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UnknownNameError(f"module {module_name!r} has no attribute {attribute!r} (from {path!r})")
        target = getattr(target, part)
    if not callable(target):
        raise UnknownNameError(f"{path!r} is not callable")
    return target


class Registry:
    """Maps names (and aliases) of one kind of variant to functions."""

    def __init__(self, kind: str):
        self.kind = kind
        self._functions: dict[str, Callable] = {}
        self._canonical: dict[str, str] = {}  # alias or name -> name

    def register(self, name: str, *aliases: str) -> Callable[[Callable], Callable]:
        def decorate(function: Callable) -> Callable:
            for key in (name, *aliases):
                if key in self._canonical:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
                self._canonical[key] = name
            self._functions[name] = function
            return function

        return decorate

    def get(self, name: str) -> Callable:
        if ":" in name:
            return load_callable(name)
        if name not in self._canonical:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())} "
                "(or give a 'module:function' path)"
            )
        return self._functions[self._canonical[name]]

    def names(self) -> list[str]:
        """Canonical names in registration order (aliases are accepted by ``get`` but not listed)."""
        return list(self._functions)

    def accepted_names(self) -> list[str]:
        """Names and aliases, each alias right after its name."""
        return [key for name in self._functions for key, target in self._canonical.items() if target == name]

    def __contains__(self, name: str) -> bool:
        return name in self._canonical


def call_with_accepted_kwargs(function: Callable, inputs: dict[str, Any]) -> Any:
    """Call ``function`` with the entries of ``inputs`` it declares.

    The trainer hands every estimator the same bag of tensors and config values; each variant takes
    what its formula needs. A missing required argument still raises ``TypeError``.
    """
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return function(**inputs)
    return function(**{key: value for key, value in inputs.items() if key in parameters})
