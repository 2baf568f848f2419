"""The method table: every `method=<name>` the launcher knows, its config schema and its module.

Adding a method is one module here (`run(cfg, record) -> MethodResult`), one `conf/method/<name>.yaml`
and one line in METHODS.  The table is torch-free, so config validation never pays for torch:
a module is imported only when its method is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from agentcoder.config import (
    BaselineMethod,
    DebugMethod,
    DpoMethod,
    GrpoMethod,
    LoraMethod,
    PpoMethod,
)
from agentcoder.methods.result import MethodResult

__all__ = ["METHODS", "MethodNotAvailable", "MethodResult", "MethodSpec", "built_methods", "load_method"]


@dataclass(frozen=True)
class MethodSpec:
    schema: type  # the dataclass `method.*` is validated against (agentcoder/config.py)
    module: str | None  # None: planned, not built yet


METHODS: dict[str, MethodSpec] = {
    "baseline": MethodSpec(BaselineMethod, "agentcoder.methods.baseline"),
    "lora": MethodSpec(LoraMethod, "agentcoder.methods.lora"),
    "dpo": MethodSpec(DpoMethod, "agentcoder.methods.dpo"),
    "ppo": MethodSpec(PpoMethod, "agentcoder.methods.ppo"),
    "grpo": MethodSpec(GrpoMethod, "agentcoder.methods.grpo"),
    "debug": MethodSpec(DebugMethod, "agentcoder.methods.debug"),  # launcher self-test, loads no model
}


class MethodNotAvailable(RuntimeError):
    pass


def built_methods() -> list[str]:
    """The methods a user can run (debug, the launcher's self-test, is left out)."""
    return [name for name, spec in METHODS.items() if spec.module and name != "debug"]


def load_method(name: str) -> ModuleType:
    spec = METHODS.get(name)
    built = ", ".join(built_methods())
    if spec is None:
        raise MethodNotAvailable(f"unknown method {name!r}; built methods: {built}")
    if spec.module is None:
        raise MethodNotAvailable(f"method {name} is not available yet; built methods: {built}")
    return import_module(spec.module)
