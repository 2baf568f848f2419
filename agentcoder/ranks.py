"""One run on several processes (torchrun / accelerate launch): which process this is, and the few
collectives a run needs besides the trainer's own.

The launchers say how many processes run and which one this is in WORLD_SIZE / RANK; reading them
needs no torch, so a plain run (world size 1) never imports it here.  Under several processes
`start()` opens the process group through accelerate (gloo on CPU, NCCL on GPUs: one code path),
before Hydra names the run dir, so that every rank can take rank 0's.  Rank 0 alone writes the run's
files; the test and val evaluations are sharded across the ranks and gathered (evaluation/evaluator.py).

The ranks meet within AGENTCODER_RENDEZVOUS_WAIT seconds (default 60) or stop, saying so: a rank
started by hand without its peers would otherwise wait as long as a collective may (hours).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RENDEZVOUS_ENV = "AGENTCODER_RENDEZVOUS_WAIT"
RENDEZVOUS_DEFAULT_WAIT = 60.0
# Collectives wait this long: the other ranks wait at a barrier while rank 0 alone samples DPO's
# pairs (training/pairs.py), longer than torch's default 10-30 min on a large train split.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


class RendezvousError(RuntimeError):
    """The ranks of a run could not meet; the message is one line for the user."""


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


def exit_after_main(code: int) -> None:
    """Exit CODE on this rank, after rank 0 has said why.  The launcher stops every rank as soon as one
    exits: the others wait a moment first, or rank 0 could be stopped before it has spoken."""
    if not is_main():
        time.sleep(5)
    sys.exit(code)


def rendezvous_timeout() -> float:
    """Seconds the ranks wait for each other at the start ($AGENTCODER_RENDEZVOUS_WAIT, default 60)."""
    raw = os.environ.get(RENDEZVOUS_ENV)
    if raw is None:
        return RENDEZVOUS_DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise RendezvousError(f"{RENDEZVOUS_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def start() -> str:
    """Open the process group (a no-op for one process); returns its backend.  The ranks meet first,
    within rendezvous_timeout(); then accelerate opens the group on that meeting, whose collectives wait
    COLLECTIVE_TIMEOUT.  On a machine without a GPU accelerate must be told so, or each rank takes
    itself for rank 0 of 1.  Raises RendezvousError (one line) when the ranks do not meet."""
    if world_size() == 1:
        return "none"
    n, me = world_size(), rank()
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:  # a launcher (torchrun, accelerate launch) sets them: this rank was started by hand
        raise RendezvousError(
            f"WORLD_SIZE={n} RANK={me} without {' and '.join(missing)}: start the ranks with "
            f"`torchrun --nproc_per_node {n} -m agentcoder.run ...` (or set MASTER_ADDR and MASTER_PORT "
            f"on every rank, each started with its own RANK)")
    wait_s = rendezvous_timeout()
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        store, _, _ = next(dist.rendezvous("env://", me, n, timeout=timedelta(seconds=wait_s)))
    except dist.DistError as err:
        who = "no peer rank joined" if me == 0 else "rank 0 did not answer"
        raise RendezvousError(
            f"rank {me} of {n} waited {wait_s:g} s at {where} and {who} (start every rank, e.g. with "
            f"`torchrun --nproc_per_node {n} -m agentcoder.run ...`; {RENDEZVOUS_ENV} sets the wait): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    store.set_timeout(COLLECTIVE_TIMEOUT)
    cpu = not torch.cuda.is_available()
    if cpu:  # each TrainingArguments makes its own accelerate state, which must know it too
        os.environ["ACCELERATE_USE_CPU"] = "true"
    state = PartialState(cpu=cpu, timeout=COLLECTIVE_TIMEOUT, store=store, rank=me, world_size=n)
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


# --------------------------------------------------------------------------- how the other ranks end


def _exit_status(pid: int) -> str:
    """How process PID ended ("died of SIGKILL", "exited with code 1"), read from /proc while it is a
    zombie; "" once its parent has reaped it (or off Linux)."""
    import signal

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = int(fields[49])  # exit_code, the waitpid(2) status (Linux >= 3.5); state is fields[0]
    except (OSError, IndexError, ValueError):
        return ""
    if fields[0] not in ("Z", "X"):
        return ""
    if os.WIFSIGNALED(status):
        try:
            return f"died of {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"died of signal {os.WTERMSIG(status)}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def watch_exits(pids: dict[int, int]) -> dict[int, str]:
    """Note how each process of PIDS (rank -> pid, on this host) ends, as it ends: the returned dict
    fills with rank -> "died of SIGKILL" / "exited with code 1" ("" when its status could not be read).

    The launcher, not this process, is their parent and reaps them within its monitor interval: the
    status is read from /proc in the moment between exit and reaping, woken by a pidfd (Linux >= 5.3;
    elsewhere nothing is noted, and a reader asks whether the pid is alive instead)."""
    ended: dict[int, str] = {}
    fds: dict[int, int] = {}
    for r, pid in pids.items():
        try:
            fds[os.pidfd_open(pid)] = r
        except (AttributeError, OSError):  # already gone, or no pidfd here
            pass
    if not fds:
        return ended
    import select

    def watch() -> None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        while fds:
            for fd, _ in poller.poll():
                r = fds.pop(fd)
                ended[r] = _exit_status(pids[r])
                poller.unregister(fd)
                os.close(fd)

    threading.Thread(target=watch, name="rank exits", daemon=True).start()
    return ended
