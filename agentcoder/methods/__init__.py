"""Training/evaluation methods, one self-contained module each.

Every method module exposes `run(cfg, record) -> dict` (the metrics).  Modules are imported
only when dispatched so that config errors never pay for torch.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

AVAILABLE = {
    "baseline": "agentcoder.methods.baseline",
    "lora": "agentcoder.methods.lora",
    "debug": "agentcoder.methods.debug",
}
PLANNED = ("dpo", "ppo", "grpo")


class MethodNotAvailable(RuntimeError):
    pass


def load_method(name: str) -> ModuleType:
    if name not in AVAILABLE:
        built = ", ".join(k for k in AVAILABLE if k != "debug")
        if name in PLANNED:
            raise MethodNotAvailable(f"method {name} is not available yet; built methods: {built}")
        raise MethodNotAvailable(f"unknown method {name!r}; built methods: {built}")
    try:
        return import_module(AVAILABLE[name])
    except ModuleNotFoundError as err:
        if err.name == AVAILABLE[name]:
            raise MethodNotAvailable(f"method {name} is not available yet") from None
        raise
