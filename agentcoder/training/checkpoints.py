"""Checkpoints of a training loop of our own (method=ppo; TRL's trainers keep theirs), and the RNG
states a loop needs to go on exactly as if it had not stopped.

A checkpoint is a folder `<dir>/iter-N`, written whole (a temp dir, then a rename) with a manifest
naming its step and the config hash of the run that wrote it.  Where a loop starts
(`resume_point`):
  * resume=false, or checkpoints of another config (a completed run re-run under other settings):
    the checkpoints are removed and the loop starts over, saying why;
  * otherwise the newest checkpoint that reads back whole; a damaged one (a file cut short) is
    named, and the one before it is tried.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agentcoder.files import read_json
from agentcoder.tracking.records import atomic_write_json

MANIFEST = "checkpoint.json"  # {"step", "config_hash"}: written last, so a folder with it is whole
PREFIX = "iter-"
T = TypeVar("T")


# --------------------------------------------------------------------------- RNG states


def rng_states() -> dict[str, Any]:
    """Every RNG a training step draws from: python's, numpy's, torch's CPU generator and each CUDA
    device's (sampling on a GPU draws from the device's generator, not the CPU's)."""
    import numpy as np
    import torch

    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the RNGs back to STATES (rng_states).  CUDA states are restored when this process sees as
    many devices as the one that saved them; otherwise the run goes on, but not bit-identically, and
    says so."""
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    saved = states.get("cuda")
    if saved is not None and torch.cuda.is_available():
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
        else:
            print(f"[checkpoint] saved with {len(saved)} CUDA devices, resumed with {torch.cuda.device_count()}: "
                  f"the CUDA RNG states are not restored; sampling will differ from an unbroken run")


# --------------------------------------------------------------------------- checkpoint folders


class DamagedCheckpoint(Exception):
    """A checkpoint file that cannot be read back (the message names it)."""


def read_part(path: Path, load: Callable[[Path], T]) -> T:
    """LOAD(PATH), any failure raised as DamagedCheckpoint naming PATH."""
    try:
        return load(path)
    except Exception as err:  # noqa: BLE001 - torch's and safetensors' errors name no file
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise DamagedCheckpoint(f"{path}: {type(err).__name__}{': ' + first if first else ''}") from err


def steps(folder: Path) -> list[int]:
    """The steps of the whole checkpoints in FOLDER, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(int(d.name.removeprefix(PREFIX)) for d in folder.glob(f"{PREFIX}*")
                  if d.name.removeprefix(PREFIX).isdigit() and (d / MANIFEST).is_file())


def save(folder: Path, step: int, write: Callable[[Path], None], config_hash: str, keep: int = 2) -> Path:
    """FOLDER/iter-STEP holding what WRITE(dir) puts there and the manifest, written whole; the last
    KEEP checkpoints stay."""
    target, tmp = folder / f"{PREFIX}{step}", folder / f".{PREFIX}{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    atomic_write_json(tmp / MANIFEST, {"step": step, "config_hash": config_hash})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    for old in steps(folder)[:-keep]:
        shutil.rmtree(folder / f"{PREFIX}{old}", ignore_errors=True)
    return target


def resume_point(folder: Path, read: Callable[[Path], T], config_hash: str, *, resume: bool,
                 tag: str) -> tuple[Path, T] | None:
    """(checkpoint dir, what READ(dir) returns) of the newest whole checkpoint in FOLDER to go on
    from, or None to start over (FOLDER then emptied).  READ raises DamagedCheckpoint for a file it
    cannot read; when every checkpoint is damaged this raises, naming each file."""
    found = steps(folder)
    if not found:
        return None
    written_by = (read_json(folder / f"{PREFIX}{found[-1]}" / MANIFEST) or {}).get("config_hash")
    if not resume or written_by != config_hash:
        why = "resume=false" if not resume else f"written by a run of another config ({written_by} != {config_hash})"
        print(f"[{tag}] checkpoints in {folder} ({PREFIX}{found[-1]}): {why}; starting over")
        shutil.rmtree(folder, ignore_errors=True)
        return None
    damaged = []
    for step in reversed(found):
        target = folder / f"{PREFIX}{step}"
        try:
            loaded = read(target)
        except DamagedCheckpoint as err:
            damaged.append(str(err))
            print(f"[{tag}] checkpoint {target} is damaged ({err}); trying the one before it")
            continue
        if damaged:
            print(f"[{tag}] resuming from {target}, the newest checkpoint that reads back whole")
        return target, loaded
    raise RuntimeError(f"every checkpoint in {folder} is damaged: {'; '.join(damaged)}; "
                       f"resume=false starts the run over")
