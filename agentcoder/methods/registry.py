"""The SFT-stage registry: which LoRA adapter a method=lora config trains, where it is, and the lock
that has one job train it while any other job of the same settings waits.

Entries live in `<cache_dir>/stages/sft-<key>.json`, the key a hash of exactly the settings that
decide the adapter (model, quant, data, data_fraction, seed, method.lora, method.train,
eval.max_new_tokens for val selection).  A method=lora job (methods/lora.py) and a staged job that
trains its stage (methods/stages.py) both hold `stage_lock` while they look the key up, train and
register, so under a parallel launcher the stage is trained once: the job that comes second waits,
then reuses.  The holder's run dir is written beside the lock; a waiting job follows that run's
heartbeat and stops waiting with an error when it went stale (a lock on a shared file system can
outlive a job killed on another host).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder import ranks
from agentcoder.files import METRICS_FILE, RUN_FILE, read_json
from agentcoder.tracking.records import atomic_write_json, is_stale

# What decides the SFT adapter; everything else (eval.limit, paths, the later method) does not.
_KEY_FIELDS = ("model", "quant", "data", "data_fraction", "seed")
_NOT_IN_KEY = ("report_to", "logging_steps")
WAIT_POLL_S = 5.0  # a waiting job looks at the holder's heartbeat this often


def stage_key(lora_cfg: DictConfig) -> str:
    """The registry key of the adapter a method=lora config trains (the config as asked: `auto`
    lengths stay `auto`, as a staged method's sft_stage_config has them)."""
    plain = {k: OmegaConf.to_container(lora_cfg[k], resolve=True) if OmegaConf.is_config(lora_cfg[k])
             else lora_cfg[k] for k in _KEY_FIELDS}
    plain["method"] = {k: OmegaConf.to_container(lora_cfg.method[k], resolve=True) for k in ("lora", "train")}
    for key in _NOT_IN_KEY:  # logging only: they do not change the adapter
        plain["method"]["train"].pop(key, None)
    plain["eval.max_new_tokens"] = lora_cfg.eval.max_new_tokens
    blob = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _entry_path(cfg: DictConfig, key: str) -> Path:
    return Path(cfg.cache_dir) / "stages" / f"sft-{key}.json"


def register_sft(cfg: DictConfig, adapter: Path, run_dir: Path) -> None:
    """Record a completed lora run's best ADAPTER as the SFT stage of CFG, the method=lora config as asked."""
    key = stage_key(cfg)
    atomic_write_json(_entry_path(cfg, key), {"key": key, "adapter": str(Path(adapter).resolve()),
                                              "run_dir": str(Path(run_dir).resolve())})


def adapter_missing(adapter: Path) -> str | None:
    """What a saved peft ADAPTER folder lacks to load (its config or its weights), None if nothing."""
    from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME

    if not (adapter / CONFIG_NAME).is_file():
        return str(adapter / CONFIG_NAME)
    if not any((adapter / name).is_file() for name in (SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME)):
        return str(adapter / SAFETENSORS_WEIGHTS_NAME)
    return None


def lookup(cfg: DictConfig, key: str) -> dict[str, Any] | None:
    """The registered stage KEY, if its adapter is still there; an entry that cannot be used (its
    adapter's files gone, or no adapter named) is said once and treated as missing: the stage is
    trained again."""
    path = _entry_path(cfg, key)
    if not path.is_file():
        return None
    entry = read_json(path)
    if not isinstance(entry, dict):
        why = "cannot be read as a JSON object"
    elif absent := [k for k in ("adapter", "run_dir") if not isinstance(entry.get(k), str)]:
        why = "has no " + " and no ".join(map(repr, absent))
    elif (gone := adapter_missing(Path(entry["adapter"]))) is not None:
        why = f"registers {entry['adapter']}, but {gone} is gone"
    else:
        return {**entry, "key": key}
    print(f"[registry] SFT stage {key}: {path} {why}; not reused: training it again")
    return None


@dataclass
class SftStage:
    """The SFT stage a staged run starts from."""

    key: str
    adapter: Path
    run_dir: Path  # the lora run that trained it
    trained_here: bool  # inside this run (<run_dir>/sft_stage), not reused

    @classmethod
    def registered(cls, entry: dict[str, Any]) -> SftStage:
        """The stage of a registry ENTRY (lookup), reused."""
        return cls(entry["key"], Path(entry["adapter"]), Path(entry["run_dir"]), trained_here=False)

    def figures(self) -> dict[str, Any]:
        """run.json's "stage" section."""
        training = (read_json(self.run_dir / METRICS_FILE) or {}).get("training") or {}
        # The stage's training time: the comparator adds it to the run's own (accuracy at equal compute).
        return {"key": self.key, "sft_adapter": str(self.adapter), "sft_run_dir": str(self.run_dir),
                "trained_here": self.trained_here, "train_time_s": training.get("train_time_s")}


@contextmanager
def stage_lock(cfg: DictConfig, key: str, run_dir: Path, tag: str) -> Iterator[None]:
    """Hold stage KEY's lock (rank 0 of a run on several processes; the others follow its decision).
    Waiting for another job says which run holds it, once; raises if that run went stale."""
    if not ranks.is_main():
        yield
        return
    from filelock import FileLock, Timeout

    entry = _entry_path(cfg, key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock, holder_file = FileLock(str(entry.with_suffix(".lock"))), entry.with_suffix(".holder.json")
    said = False
    while True:
        try:
            lock.acquire(timeout=WAIT_POLL_S if said else 0)
            break
        except Timeout:
            holder = read_json(holder_file) or {}
            if not said:
                print(f"[{tag}] SFT stage {key} is being trained by {holder.get('run_dir', 'another job')} "
                      f"(pid {holder.get('pid')} on {holder.get('host')}): waiting for it")
                said = True
            record = read_json(Path(holder["run_dir"]) / RUN_FILE) if holder.get("run_dir") else None
            if record and is_stale(record):
                raise RuntimeError(
                    f"SFT stage {key}: {holder['run_dir']} holds its lock but its run stopped without a final "
                    f"status (last heartbeat {record.get('heartbeat_at')}); if no job is training it, remove "
                    f"{entry.with_suffix('.lock')}") from None
    try:
        atomic_write_json(holder_file, {"run_dir": str(Path(run_dir).resolve()), "pid": os.getpid(),
                                        "host": platform.node()})
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()
