"""Hydra callbacks: sweep lock and summary, secret scrubbing of Hydra's files, and job dirs keyed
to the config.

- `on_run_start` refuses a run dir that holds a live run, before Hydra writes `.hydra/` and the job
  log into it (a sweep job whose config is running live elsewhere gets a fresh dir, see below).
- `on_multirun_start` locks the sweep dir (a second sweep into it stops at once) and remembers
  where it writes; the entrypoint prints the summary after Hydra returns (Hydra skips
  `on_multirun_end` when a job failed).
- `on_job_start` rewrites `.hydra/*.yaml` and `multirun.yaml` through the one scrubber, and
  `on_job_end` leaves a failed record for a job that died before writing its own, so the summary
  counts it.
- `${agentcoder_job_subdir:}` (conf/config.yaml's `hydra.sweep.subdir`) names a job's directory:
  the directory of a run of the same config hash if the sweep dir has one (so a value prepended
  to a sweep list skips the completed jobs wherever their number now is), else the job number,
  else the next free number (a completed run of another config is never overwritten).  When that run
  of the same config is live, the job gets the next free number instead and fails at its start,
  naming the live dir (`LIVE_ELSEWHERE`): nothing of it is written into the live run's dir.
- `${agentcoder_new_dir:outputs}` (`hydra.run.dir`, `hydra.sweep.dir`) names a fresh directory by
  the start time and claims it with an exclusive mkdir: on a coarse clock two runs started in the
  same tick got the same name, and the second then took the first's record for its own.  The ranks
  of one run on several processes all take the directory rank 0 claimed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from agentcoder import ranks
from agentcoder.files import RUN_FILE
from agentcoder.tracking.records import (
    effective_status,
    live_run_error,
    mark_stale_failed,
    read_json,
    write_early_failure,
)
from agentcoder.tracking.secrets import scrub_file

# Filled by on_multirun_start / on_job_end; read by agentcoder.run after the sweep (same process).
CURRENT_SWEEP: dict[str, Any] = {}
LOCK_FILE = ".sweep.lock"
# Sweep job dir (resolved) -> why the job must not run: its config is running live in another dir.
LIVE_ELSEWHERE: dict[str, str] = {}


def _scrub_hydra_files(output_dir: Path, sweep_dir: Path | None) -> None:
    for path in sorted((output_dir / ".hydra").glob("*.yaml")) + sorted(output_dir.glob("*.log")):
        scrub_file(path)
    if sweep_dir is not None:
        scrub_file(sweep_dir / "multirun.yaml")


class SweepSummary(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra writes .hydra/*.yaml and the job log into the run dir next (core/utils.py run_job).
        run_dir = Path(str(config.hydra.run.dir))
        data = ranks.broadcast(mark_stale_failed(run_dir) if ranks.is_main() else None)  # a dead one: failed
        if data and data.get("status") == "running":
            if ranks.is_main():
                print(f"agentcoder: {live_run_error(run_dir, data)}; wait for it or pick another hydra.run.dir",
                      file=sys.stderr)
            ranks.exit_after_main(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(sweep_dir / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"agentcoder: another sweep is writing into {sweep_dir} (lock {LOCK_FILE}); "
                  f"wait for it or pick another hydra.sweep.dir", file=sys.stderr)
            raise SystemExit(3) from None
        CURRENT_SWEEP.update(dir=sweep_dir, lock=lock, jobs={},
                             started_at=datetime.now(UTC).isoformat(timespec="milliseconds"))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        _scrub_hydra_files(Path(config.hydra.runtime.output_dir), CURRENT_SWEEP.get("dir"))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        output_dir = Path(config.hydra.runtime.output_dir)
        failed = job_return.status == JobStatus.FAILED
        if failed and not (output_dir / RUN_FILE).exists() and ranks.is_main():
            write_early_failure(output_dir, job_return._return_value,
                                OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        if "jobs" in CURRENT_SWEEP:
            CURRENT_SWEEP["jobs"][str(output_dir)] = "failed" if failed else "completed"
        _scrub_hydra_files(output_dir, CURRENT_SWEEP.get("dir"))


def summarise_sweep(sweep_dir: Path, since: str, ended: dict[str, str] | None = None) -> dict[str, int]:
    """Count this invocation's jobs under SWEEP_DIR (ISO time SINCE): completed, failed, skipped,
    interrupted, and `before_record` (failed before writing a record; also counted as failed).

    ENDED maps the job dirs Hydra ran to their outcome, so a job that left no record still counts.
    """
    counts = {"completed": 0, "failed": 0, "skipped": 0, "interrupted": 0, "before_record": 0}
    # Hydra reports absolute job dirs while the sweep dir may be relative: compare resolved paths.
    ended = {str(Path(d).resolve()): outcome for d, outcome in (ended or {}).items()}
    dirs = {p.parent.resolve() for p in Path(sweep_dir).glob(f"*/{RUN_FILE}")} | {Path(d) for d in ended}
    for job_dir in sorted(dirs):
        data = read_json(job_dir / RUN_FILE) or {}
        status = effective_status(data)
        skips = sum(t >= since for t in data.get("skips") or [data.get("skipped_at") or ""])
        counts["skipped"] += skips
        if skips and (data.get("started_at") or "") < since:
            continue  # only skipped in this invocation
        if (data.get("started_at") or "") >= since and status in counts:
            counts[status] += 1
            counts["before_record"] += bool(data.get("before_record"))
        elif (data.get("started_at") or "") >= since and status == "stale":
            counts["failed"] += 1
        elif ended.get(str(job_dir)) == "failed":
            counts["failed"] += 1
            counts["before_record"] += 1
    return counts


def sweep_summary_line() -> str:
    counts = summarise_sweep(CURRENT_SWEEP["dir"], CURRENT_SWEEP["started_at"], CURRENT_SWEEP.get("jobs"))
    failed = f"{counts['failed']} failed"
    if counts["before_record"]:
        failed += f" ({counts['before_record']} before writing a record)"
    line = (f"[agentcoder] sweep {CURRENT_SWEEP['dir']}: {counts['completed']} completed, {failed}, "
            f"{counts['skipped']} skipped")
    return line + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")


# --------------------------------------------------------------------------- job dirs

_CLAIMED: dict[str, str] = {}  # parent -> claimed dir; Hydra may resolve the same key more than once


def new_dir(parent: str, *, now: datetime | None = None) -> str:
    """`<parent>/<date>/<time.microseconds>`, made here so no other process can take it; a name
    already taken gets `-2`, `-3`, ... (see the module docstring)."""
    if parent in _CLAIMED and now is None:
        return _CLAIMED[parent]
    if ranks.world_size() > 1 and now is None:  # one run on several processes: rank 0's dir is everyone's
        _CLAIMED[parent] = ranks.broadcast(_claim(parent, datetime.now()) if ranks.is_main() else None)
        return _CLAIMED[parent]
    path = _claim(parent, now or datetime.now())
    if now is None:
        _CLAIMED[parent] = path
    return path


def _claim(parent: str, now: datetime) -> str:
    stamp = now.strftime("%Y-%m-%d/%H-%M-%S.%f")
    base = Path(parent) / stamp
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    return str(path)


def job_subdir(*, _root_: DictConfig) -> str:
    """The sweep job's directory name (see the module docstring)."""
    from agentcoder.config import config_hash, merge_schema

    num = str(_root_.hydra.job.num)
    sweep_dir = Path(str(_root_.hydra.sweep.dir))
    try:
        plain = OmegaConf.to_container(_root_, resolve=False)
        plain.pop("hydra", None)
        wanted = config_hash(merge_schema(OmegaConf.create(plain)))
    except Exception:  # noqa: BLE001 - a bad combination fails in its task, with its own record
        wanted = None
    live = None
    for run_file in sorted(sweep_dir.glob(f"*/{RUN_FILE}")):
        data = mark_stale_failed(run_file.parent) or {}
        if wanted and data.get("config_hash") == wanted:
            if data.get("status") != "running":
                return run_file.parent.name
            live = live_run_error(run_file.parent, data)
    if live is None and not (sweep_dir / num / RUN_FILE).exists():
        return num
    taken = {p.name for p in sweep_dir.iterdir()} if sweep_dir.is_dir() else set()
    n = int(num) if num.isdigit() else 0
    while str(n) in taken:
        n += 1
    if live is not None:
        LIVE_ELSEWHERE[str((sweep_dir / str(n)).resolve())] = f"{live}, of this job's config"
    return str(n)


if not OmegaConf.has_resolver("agentcoder_job_subdir"):
    OmegaConf.register_new_resolver("agentcoder_job_subdir", job_subdir)
if not OmegaConf.has_resolver("agentcoder_new_dir"):
    OmegaConf.register_new_resolver("agentcoder_new_dir", new_dir, use_cache=True)
