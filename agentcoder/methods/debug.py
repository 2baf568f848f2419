"""A method that loads nothing: exercises the launcher (records, sweeps, resume) in tests.

`method=debug method.fail=true` raises on purpose, so a sweep can show that one failing job
is recorded as failed while the others complete.  `method.value` is reported as its exact match,
so sweeps over it give an optimizing sweeper something to maximise.  Under several processes
(`torchrun --nproc_per_node 2 -m agentcoder.run method=debug`) `method.fail_rank=N` fails rank N only.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from agentcoder import ranks
from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult, val_objective


class DebugFailure(RuntimeError):
    pass


def run(cfg: DictConfig, record: RunRecord) -> MethodResult:
    if cfg.method.sleep_s > 0:
        time.sleep(cfg.method.sleep_s)
    if cfg.method.fail and cfg.method.fail_rank in (None, ranks.rank()):
        where = f" on rank {ranks.rank()}" if ranks.world_size() > 1 else ""
        raise DebugFailure(f"method.fail=true (value={cfg.method.value}): failing on purpose{where}")
    overall = {"exact_match": cfg.method.value, "value": cfg.method.value, "seed": cfg.seed}
    # Its value stands for a val figure, so a search over method.value has an objective to maximise.
    return MethodResult(method="debug", split=None, model=None, overall=overall,
                        objective=val_objective(cfg.eval.objective, overall, None))
