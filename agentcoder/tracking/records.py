"""Run records: what every run directory says about itself.

`run.json` is rewritten atomically at each state change (running -> completed | failed), so a
reader never sees half a file and a killed run still says `running` with its start time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.config import config_hash

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"

TRACKED_PACKAGES = (
    "agentcoder", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets",
    "hydra-core", "omegaconf", "gguf", "numpy", "pandas",
)
_SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "ACCESS_KEY")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename, so readers never see partial files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _secret_values() -> list[str]:
    return [v for k, v in os.environ.items() if any(m in k.upper() for m in _SECRET_MARKERS) and len(v) >= 6]


def scrub(text: str) -> str:
    """Replace the value of every secret-looking environment variable with ***."""
    for secret in _secret_values():
        text = text.replace(secret, "***")
    return text


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, scrub(json.dumps(data, indent=2, sort_keys=False, default=str)) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


class RunRecord:
    """The `run.json` of one run directory, plus its metrics and error files."""

    def __init__(self, run_dir: Path, data: dict[str, Any]):
        self.dir = Path(run_dir)
        self.data = data
        self._t0 = time.perf_counter()

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
        data: dict[str, Any] = {
            "status": "running",
            "config_hash": config_hash(cfg),
            "method": OmegaConf.select(cfg, "method.name"),
            "seeds": {"seed": cfg.seed, "split_seed": OmegaConf.select(cfg, "data.split_seed")},
            "data_fraction": cfg.data_fraction,
            "choices": hydra.get("choices", {}),
            "overrides": hydra.get("overrides", []),
            # The resolved config, so a comparator can group runs by any hyperparameter.
            "config": OmegaConf.to_container(cfg, resolve=True),
            "command": _command_line(),
            "cwd": os.getcwd(),
            "run_dir": str(run_dir),
            "git": git_info(),
            "versions": package_versions(),
            "hardware": hardware(),
            "started_at": _now(),
            "ended_at": None,
            "duration_s": None,
            "attempt": int(prev.get("attempt", 0)) + 1,
            "resumed_from_status": prev.get("status") if prev else None,
        }
        record = cls(Path(run_dir), data)
        (record.dir / ERROR_FILE).unlink(missing_ok=True)
        record.write()
        return record

    def write(self) -> None:
        atomic_write_json(self.path, self.data)

    def update(self, **sections: Any) -> None:
        """Merge sections (e.g. data=..., model=...) into the record and rewrite it."""
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(self.data.get(key), dict):
                self.data[key].update(value)
            else:
                self.data[key] = value
        self.write()

    def _finish(self, status: str) -> None:
        self.data["status"] = status
        self.data["ended_at"] = _now()
        self.data["duration_s"] = round(time.perf_counter() - self._t0, 3)
        self.data["hardware"] = hardware()
        self.write()

    def complete(self, metrics: dict[str, Any] | None) -> None:
        if metrics:
            atomic_write_json(self.dir / METRICS_FILE, metrics)
        self._finish("completed")

    def fail(self, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        atomic_write_text(self.dir / ERROR_FILE, scrub(tb))
        self.data["error"] = scrub(f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
        self._finish("failed")

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.fail(exc)
        elif self.data["status"] == "running":
            self._finish("completed")
        return False


def mark_skipped(run_dir: Path) -> None:
    data = RunRecord.previous(run_dir) or {}
    data["skipped_at"] = _now()
    atomic_write_json(Path(run_dir) / RUN_FILE, data)
