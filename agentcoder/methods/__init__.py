"""The recipes: one module per method, `run(cfg, record) -> MethodResult`, found through the method
table (agentcoder.config.METHODS) and imported only when dispatched."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from agentcoder.config import METHODS, built_methods

__all__ = ["MethodNotAvailable", "load_method"]


class MethodNotAvailable(RuntimeError):
    pass


def load_method(name: str) -> ModuleType:
    """The recipe module of method NAME."""
    spec = METHODS.get(name)
    built = ", ".join(built_methods())
    if spec is None:
        raise MethodNotAvailable(f"unknown method {name!r}; built methods: {built}")
    if spec.module is None:
        raise MethodNotAvailable(f"method {name} is not available yet; built methods: {built}")
    return import_module(spec.module)
