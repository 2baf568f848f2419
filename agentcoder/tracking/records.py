"""Run records: what every run directory says about itself.

`run.json` is rewritten atomically at each state change (running -> completed | failed |
interrupted), so a reader never sees half a file.  The final status is written before anything
else (error.txt comes after it), and on a full disk it goes into run.json's own blocks.  A run
killed outright (SIGKILL, power loss) still says `running`: its pid, host and heartbeat let a
reader tell it from a live one (`effective_status` reads it as `stale`).

One run on several processes (agentcoder/ranks.py) has one record: rank 0 writes it, with the
world size and every rank's pid.  A rank that fails leaves its traceback in `error.rank<N>.txt`
and exits; the launcher then stops the others, and rank 0 ends the run as failed with that error.
A rank killed outright leaves none: rank 0 watches the ranks on its host and names the one that died
and its signal.  A run whose every rank stopped on a signal (the launcher's SIGTERM, Ctrl-C) is
`interrupted`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder import ranks
from agentcoder.config import config_hash
from agentcoder.files import METRICS_FILE, RUN_FILE, atomic_write_text, read_json
from agentcoder.tracking.secrets import scrub

ERROR_FILE = "error.txt"
RANK_ERROR_FILE = "error.rank{rank}.txt"  # the traceback of a rank other than 0 that failed

TRACKED_PACKAGES = (
    "agentcoder", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets",
    "hydra-core", "omegaconf", "gguf", "numpy", "pandas",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
# A live run rewrites its heartbeat this often; one silent for STALE_AFTER_S is taken for dead
# (used only for a run on another host: on the same host the pid is asked directly).
HEARTBEAT_S = 30.0
STALE_AFTER_S = 4 * HEARTBEAT_S

def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _finite(value: Any, key: str, bad: dict[str, str]) -> Any:
    """VALUE with NaN/inf floats replaced by None; their dotted keys go into BAD."""
    if isinstance(value, float) and not math.isfinite(value):
        bad[key] = str(value)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{key}.{k}" if key else str(k), bad) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, f"{key}[{i}]", bad) for i, v in enumerate(value)]
    return value


def to_json(data: Any, indent: int | None = 2) -> str:
    """Strict, scrubbed JSON: NaN/inf become null, listed under "non_finite" (a dict's own note)."""
    bad: dict[str, str] = {}
    clean = _finite(data, "", bad)
    if bad and isinstance(clean, dict):
        clean["non_finite"] = {**clean.get("non_finite", {}), **bad}
    return scrub(json.dumps(clean, indent=indent, sort_keys=False, default=str, allow_nan=False))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, to_json(data) + "\n")


# --------------------------------------------------------------------------- environment facts


def git_info(root: Path = REPO_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status) if status is not None else None
    return {"commit": commit, "dirty": dirty, "branch": git("branch", "--show-current")}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "gpu": None,
    }
    # Only ask torch once a method has imported it: importing it here would slow every run start.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_bytes": props.total_memory, "count": torch.cuda.device_count()}
    return info


def _command_line() -> list[str]:
    # Under `python -m agentcoder.run` argv[0] is the module's file path; show what the user typed.
    prog = sys.argv[0]
    head = ["python", "-m", "agentcoder.run"] if prog.endswith(("agentcoder/run.py", "agentcoder.run")) else [prog]
    return [*head, *sys.argv[1:]]


# --------------------------------------------------------------------------- the record


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error of the run
    """Raised in the main thread by a SIGTERM/SIGHUP handler, so the run ends as `interrupted`."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _pid_alive(pid: int, started_at: str | None) -> bool:
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return psutil.pid_exists(pid)
    if started_at:  # a pid reused by a process born after the run started is not the run
        try:
            return created <= datetime.fromisoformat(started_at).timestamp() + 1.0
        except (TypeError, ValueError):  # a hand-edited record: the pid alone says it
            pass
    return True


def is_stale(data: dict[str, Any], now: float | None = None) -> bool:
    """True when a `running` record's process is gone (same host) or its heartbeat went silent."""
    if data.get("status") != "running":
        return False
    pid, host = data.get("pid"), data.get("host")
    if host == platform.node() and isinstance(pid, int):
        return not _pid_alive(pid, data.get("started_at"))
    beat = data.get("heartbeat_at")
    if not beat:  # written by a version without a heartbeat: nothing shows it alive
        return True
    try:
        age = (now or time.time()) - datetime.fromisoformat(beat).timestamp()
    except (TypeError, ValueError):
        return True
    return age > STALE_AFTER_S


def effective_status(data: dict[str, Any]) -> str | None:
    """The status to believe: `stale` for a `running` record whose process died without a word."""
    return "stale" if is_stale(data) else data.get("status")


def live_run_error(run_dir: Path, data: dict[str, Any]) -> str:
    """The one line that refuses to run into RUN_DIR while its record DATA is live."""
    return (f"{run_dir} holds a live run (pid {data.get('pid')} on {data.get('host')}, started "
            f"{data.get('started_at')})")


def stale_error(run_dir: Path, data: dict[str, Any]) -> str:
    """Why the stale record DATA of RUN_DIR ended: its process stopped without a final status, and the
    first error another rank of it left, if any (rank 0 died before it could take that error in)."""
    error = (f"stale: process {data.get('pid')} on {data.get('host')} stopped without a final "
             f"status (last heartbeat {data.get('heartbeat_at') or data.get('started_at')})")
    others = rank_errors(run_dir) if data.get("world_size") else []
    return error + (f"; rank {others[0][0]}: {_last_line(others[0][1])}" if others else "")


def mark_stale_failed(run_dir: Path) -> dict[str, Any] | None:
    """Rewrite a stale `running` record as failed (saying why); return the record as it now is."""
    data = RunRecord.previous(run_dir)
    if data and is_stale(data):
        data["status"] = "failed"
        data["error"] = stale_error(run_dir, data)
        data["ended_at"] = data.get("heartbeat_at")
        atomic_write_json(Path(run_dir) / RUN_FILE, data)
    return data


def rank_errors(run_dir: Path) -> list[tuple[int, str]]:
    """(rank, traceback) of every error.rank<N>.txt in RUN_DIR, first written first."""
    found = []
    for path in Path(run_dir).glob(RANK_ERROR_FILE.format(rank="*")):
        try:
            found.append((path.stat().st_mtime, int(path.name.split(".")[1].removeprefix("rank")),
                          path.read_text(errors="replace")))
        except (OSError, ValueError):
            continue
    return [(r, text) for _, r, text in sorted(found)]


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _is_interruption(tb: str) -> bool:
    """Whether traceback TB ends in a signal (Interrupted, Ctrl-C) rather than an error of the run."""
    name = _last_line(tb).split(":", 1)[0].rsplit(".", 1)[-1]
    return name in (Interrupted.__name__, KeyboardInterrupt.__name__)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def _attempt_summary(prev: dict[str, Any]) -> dict[str, Any]:
    """One earlier attempt of a run dir, from its run.json: when it ran, how it ended, how long.  A killed
    attempt lasted until its last heartbeat, at least; one killed before its first heartbeat lasted
    an unknown time (None), not 0 s."""
    ended = prev.get("ended_at") or prev.get("heartbeat_at")
    duration = prev.get("duration_s")
    if duration is None:
        beat = _seconds_between(prev.get("started_at"), prev.get("heartbeat_at"))
        duration = None if beat is None or beat < HEARTBEAT_S / 2 else _seconds_between(prev.get("started_at"), ended)
    return {"attempt": prev.get("attempt", 1), "status": prev.get("status"), "started_at": prev.get("started_at"),
            "ended_at": ended, "duration_s": duration}


class RunRecord:
    """The `run.json` of one run directory, plus its metrics and error files."""

    def __init__(self, run_dir: Path, data: dict[str, Any]):
        self.dir = Path(run_dir)
        self.data = data
        self._t0 = time.perf_counter()
        self._lock = threading.RLock()  # the heartbeat thread writes too
        self._beating = threading.Event()
        self.main = ranks.is_main()  # only rank 0 writes the run's files
        self._ended: dict[int, str] = {}  # rank -> how its process ended (ranks.watch_exits)

    @property
    def path(self) -> Path:
        return self.dir / RUN_FILE

    @classmethod
    def previous(cls, run_dir: Path) -> dict[str, Any] | None:
        return read_json(Path(run_dir) / RUN_FILE)

    @classmethod
    def start(cls, run_dir: Path, cfg: DictConfig, hydra: dict[str, Any] | None = None) -> RunRecord:
        prev = cls.previous(run_dir) or {}
        hydra = hydra or {}
        started = _now()
        data: dict[str, Any] = {
            "status": "running",
            "config_hash": config_hash(cfg),
            "method": OmegaConf.select(cfg, "method.name"),
            "seeds": {"seed": cfg.seed, "split_seed": OmegaConf.select(cfg, "data.split_seed")},
            "data_fraction": cfg.data_fraction,
            "choices": hydra.get("choices", {}),
            "overrides": hydra.get("overrides", []),
            # A sweep job's dir is keyed to its config, not its number (tracking/callbacks.py).
            "job_num": hydra.get("job_num"),
            # The resolved config, so a comparator can group runs by any hyperparameter.
            "config": OmegaConf.to_container(cfg, resolve=True),
            "command": _command_line(),
            "cwd": os.getcwd(),
            "run_dir": str(run_dir),
            "git": git_info(),
            "versions": package_versions(),
            "hardware": hardware(),
            "pid": os.getpid(),
            "host": platform.node(),
            "started_at": started,
            "heartbeat_at": started,  # the same stamp until the first beat
            "ended_at": None,
            "duration_s": None,
            "attempt": int(prev.get("attempt", 0)) + 1,
            "resumed_from_status": prev.get("status") if prev else None,
            # Every earlier attempt of this run dir (a killed one ends at its last heartbeat), so that
            # the run's time is all of its attempts', not the last one's.
            "attempts": [*prev.get("attempts", []), _attempt_summary(prev)] if prev.get("started_at") else [],
        }
        if ranks.world_size() > 1:
            data["world_size"] = ranks.world_size()
            data["processes"] = [p for share in ranks.gather([{"rank": ranks.rank(), "pid": os.getpid(),
                                                               "host": platform.node()}]) for p in share]
        record = cls(Path(run_dir), data)
        if record.main and ranks.world_size() > 1:
            record._ended = ranks.watch_exits(record._peers(same_host=True))
        if record.main:
            for old in (ERROR_FILE, *(p.name for p in record.dir.glob(RANK_ERROR_FILE.format(rank="*")))):
                (record.dir / old).unlink(missing_ok=True)
            record.write()
            record._start_heartbeat()
        ranks.barrier()  # no rank starts (or fails) before rank 0 has cleared the last attempt's errors
        return record

    def write(self) -> None:
        if not self.main:
            return
        with self._lock:
            atomic_write_json(self.path, self.data)

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._beating.wait(HEARTBEAT_S):
                with self._lock:
                    if self.data["status"] != "running":
                        return
                    self.data["heartbeat_at"] = _now()
                    try:
                        self.write()
                    except OSError:  # a full disk: the final status has its own fallback
                        pass

        threading.Thread(target=beat, name="run.json heartbeat", daemon=True).start()

    def _write_final(self) -> None:
        """Write run.json; on a full disk, overwrite it in place (its blocks are already allocated)."""
        if not self.main:
            return
        try:
            self.write()
            return
        except OSError:
            pass
        size = self.path.stat().st_size
        text = to_json(self.data, indent=None)
        if len(text.encode()) > size:
            keep = ("status", "error", "config_hash", "method", "pid", "host", "started_at", "ended_at",
                    "duration_s", "attempt")
            text = to_json({**{k: self.data.get(k) for k in keep}, "truncated": "disk full"}, indent=None)
        blob = text.encode().ljust(size)  # JSON allows trailing spaces: no block is freed and re-asked
        with self._lock, open(self.path, "r+b") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())

    def update(self, **sections: Any) -> None:
        """Merge sections (e.g. data=..., model=...) into the record and rewrite it."""
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(self.data.get(key), dict):
                self.data[key].update(value)
            else:
                self.data[key] = value
        self.write()

    def _finish(self, status: str) -> None:
        self._beating.set()
        with self._lock:
            self.data["status"] = status
            self.data["ended_at"] = _now()
            self.data["duration_s"] = round(time.perf_counter() - self._t0, 3)
            earlier = [a.get("duration_s") for a in self.data.get("attempts", [])]
            # Unknown when an earlier attempt's is (killed before its first heartbeat).
            self.data["total_duration_s"] = (None if None in earlier
                                             else round(sum(earlier) + self.data["duration_s"], 3))
            try:
                self.data["hardware"] = hardware()
            except OSError:
                pass
            self._write_final()

    def complete(self, metrics: dict[str, Any] | None) -> None:
        ranks.barrier()  # every rank got to the end (one that failed after the last collective stops it here)
        if metrics and self.main:
            atomic_write_json(self.dir / METRICS_FILE, metrics)
        self._finish("completed")

    def fail(self, exc: BaseException) -> None:
        """Status first (failed, or interrupted for a signal / Ctrl-C), then error.txt.  A rank other
        than 0 writes its traceback to error.rank<N>.txt only.  Rank 0 decides for the run: the
        launcher stops the other ranks when one ends, so rank 0 then sees a signal or a broken
        collective, not the cause; the cause is the rank that died without a word (a signal it could
        not catch), else the first rank's error that is not a signal; `interrupted` when every rank
        stopped on a signal."""
        tb = scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        if not self.main:
            try:
                atomic_write_text(self.dir / RANK_ERROR_FILE.format(rank=ranks.rank()), tb)
            except OSError as err:
                print(f"[agentcoder] rank {ranks.rank()}: could not write its error ({err})", file=sys.stderr)
            return
        signalled = isinstance(exc, Interrupted | KeyboardInterrupt)
        # A signal or a broken collective says another rank ended first: give it time to write its error.
        waits = signalled or any(c.__name__.startswith("Dist") for c in type(exc).__mro__)
        errors, silent = self._other_ranks(wait_s=5.0 if waits else 0.0)
        status = "interrupted" if signalled else "failed"
        error = f"{type(exc).__name__}: {exc}"
        causes = [(r, text) for r, text in errors if not _is_interruption(text)]
        if silent:
            rank, pid, how = silent[0]
            status, error = "failed", f"rank {rank} (pid {pid}) {how}, leaving no error"
        elif causes:
            rank, text = causes[0]
            status, error = "failed", f"rank {rank}: {_last_line(text)}"
        elif errors and waits:  # every other rank stopped on a signal; this one too, or its collective broke
            status = "interrupted"
            if not signalled:
                error = f"rank {errors[0][0]}: {_last_line(errors[0][1])}"
        if errors:
            tb = "".join(f"--- rank {r} ---\n{text}\n" for r, text in errors) + f"--- rank 0 ---\n{tb}"
        self.data["error"] = scrub(error.splitlines()[0][:500] if error.strip() else type(exc).__name__)
        self._finish(status)
        try:
            atomic_write_text(self.dir / ERROR_FILE, tb)
        except OSError as err:
            print(f"[agentcoder] {self.dir}: could not write {ERROR_FILE} ({err})", file=sys.stderr)

    def _peers(self, same_host: bool) -> dict[int, int]:
        """rank -> pid of the other ranks (SAME_HOST: only those on this host, whose pid can be asked)."""
        return {p["rank"]: p["pid"] for p in self.data.get("processes", [])
                if p.get("rank") != ranks.rank() and (not same_host or p.get("host") == platform.node())}

    def _other_ranks(self, wait_s: float) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        """(rank, traceback) of every other rank that wrote its error, first written first; (rank, pid,
        how) of every rank on this host that ended without one.  Waits up to WAIT_S for every other rank
        to have either written its error or ended."""
        if ranks.world_size() == 1:
            return [], []
        local, everyone = self._peers(same_host=True), self._peers(same_host=False)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                ended = {r for r in local if r in self._ended or not _pid_alive(local[r], self.data.get("started_at"))}
                errors = rank_errors(self.dir)
                if {r for r, _ in errors} | ended >= set(everyone) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            except (Interrupted, KeyboardInterrupt):  # the launcher stopping this rank too: keep looking
                pass
        written = {r for r, _ in errors}
        silent = [(r, local[r], self._ended.get(r) or "ended (its exit status was not seen)")
                  for r in sorted(ended - written)]
        return errors, silent

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.fail(exc)
        elif self.data["status"] == "running":
            try:
                self.complete(None)
            except BaseException as err:  # a rank failed before the end (complete waits for every rank)
                self.fail(err)
                raise
        return False


def write_early_failure(run_dir: Path, exc: BaseException | None, overrides: list[str]) -> None:
    """The record of a job that failed before RunRecord.start: failed, with the one-line error."""
    now = _now()
    error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500] if exc is not None else "unknown error"
    data = {"status": "failed", "before_record": True, "error": error, "overrides": overrides,
            "command": _command_line(), "run_dir": str(run_dir), "pid": os.getpid(), "host": platform.node(),
            "started_at": now, "ended_at": now}
    try:
        atomic_write_json(Path(run_dir) / RUN_FILE, data)
    except OSError as err:
        print(f"[agentcoder] {run_dir}: could not write {RUN_FILE} ({err})", file=sys.stderr)


def mark_skipped(run_dir: Path) -> None:
    """Note a sweep job that found its config done here: `skipped_at` (the last) and `skips` (every one,
    so a sweep whose later jobs share this dir, e.g. baseline's fractions, counts each)."""
    data = RunRecord.previous(run_dir) or {}
    data["skipped_at"] = _now()
    data["skips"] = [*data.get("skips", []), data["skipped_at"]][-100:]
    atomic_write_json(Path(run_dir) / RUN_FILE, data)
