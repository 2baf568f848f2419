"""One run on several processes (torchrun / accelerate launch): which process this is, and the few
collectives a run needs besides the trainer's own.

The launchers say how many processes run and which one this is in WORLD_SIZE / RANK; reading them
needs no torch, so a plain run (world size 1) never imports it here.  Under several processes
`start()` opens the process group through accelerate (gloo on CPU, NCCL on GPUs: one code path),
before Hydra names the run dir, so that every rank can take rank 0's.  Rank 0 alone writes the run's
files; the test and val evaluations are sharded across the ranks and gathered (evaluation/evaluator.py).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """The processes the launcher started for this run (1 when run plainly)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    return _env_int("RANK", 0) if world_size() > 1 else 0


def is_main() -> bool:
    """Rank 0: the one process that writes the run's files."""
    return rank() == 0


def start() -> str:
    """Open the process group (a no-op for one process); returns its backend.  On a machine without a
    GPU accelerate must be told so, or each rank takes itself for rank 0 of 1."""
    if world_size() == 1:
        return "none"
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    # Collectives wait this long: the other ranks wait at a barrier while rank 0 alone samples DPO's
    # pairs (training/pairs.py), longer than torch's default 10-30 min on a large train split.
    cpu = not torch.cuda.is_available()
    if cpu:  # each TrainingArguments makes its own accelerate state, which must know it too
        os.environ["ACCELERATE_USE_CPU"] = "true"
    state = PartialState(cpu=cpu, timeout=timedelta(hours=2))
    return str(state.backend)


def _started() -> bool:
    if world_size() == 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def broadcast(value: T) -> T:
    """Rank 0's VALUE, on every rank (any picklable object)."""
    if not _started():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(values: list[Any]) -> list[list[Any]]:
    """Every rank's VALUES, in rank order, on every rank."""
    if not _started():
        return [values]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, values)
    return out


def barrier() -> None:
    """Wait until every rank gets here (e.g. rank 0 has written a file the others read next)."""
    if _started():
        import torch.distributed as dist

        dist.barrier()


def shard(n: int) -> list[int]:
    """This rank's share of N items, by index: every world_size()-th from its rank."""
    return list(range(rank(), n, world_size()))
