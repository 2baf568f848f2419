"""Hydra callbacks: remember where a sweep writes so the entrypoint can summarise it.

Hydra skips `on_multirun_end` when any job failed, so the summary itself is printed by the
entrypoint after Hydra returns or exits; this callback only records what it needs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from agentcoder.tracking.records import RUN_FILE, read_json

# Filled by on_multirun_start; read by agentcoder.run after the sweep (same process).
CURRENT_SWEEP: dict[str, Any] = {}


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        CURRENT_SWEEP["dir"] = Path(str(config.hydra.sweep.dir))
        CURRENT_SWEEP["started_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")


def summarise_sweep(sweep_dir: Path, since: str) -> dict[str, int]:
    """Count this invocation's jobs under SWEEP_DIR: completed, failed, skipped (ISO time SINCE)."""
    counts = {"completed": 0, "failed": 0, "skipped": 0}
    for run_file in sorted(Path(sweep_dir).glob(f"*/{RUN_FILE}")):
        data = read_json(run_file) or {}
        if (data.get("skipped_at") or "") >= since:
            counts["skipped"] += 1
        elif (data.get("started_at") or "") >= since and data.get("status") in counts:
            counts[data["status"]] += 1
    return counts
