"""A method that loads nothing: exercises the launcher (records, sweeps, resume) in tests.

`method=debug method.fail=true` raises on purpose, so a sweep can show that one failing job
is recorded as failed while the others complete.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from agentcoder.tracking.records import RunRecord


class DebugFailure(RuntimeError):
    pass


def run(cfg: DictConfig, record: RunRecord) -> dict[str, Any]:
    if cfg.method.fail:
        raise DebugFailure(f"method.fail=true (value={cfg.method.value}): failing on purpose")
    return {"overall": {"value": cfg.method.value, "seed": cfg.seed}}
