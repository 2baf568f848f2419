"""Atomic file writes, tolerant JSON reads and the names of a run directory's shared files: the
one file floor that records, the secret scrubber, evaluation and the comparator all stand on (it
imports nothing of agentcoder)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

# The files of a run directory that more than one part of the package reads or writes.
RUN_FILE = "run.json"  # the record: status, config, provenance (tracking/records.py)
METRICS_FILE = "metrics.json"  # the result (tracking/result.py)
PREDICTIONS_FILE = "predictions.jsonl"  # one judged test example per line (evaluation/evaluator.py)
TRAIN_LOG_FILE = "train_log.jsonl"  # one trainer log event per line (tracking/trainlog.py)
BEST_FILE = "best.json"  # the kept checkpoint's step and val figures (training/selection.py)
STUDY_FILE = "study.journal"  # a search's optuna journal, in its sweep dir (hydra_plugins/agentcoder_sweeper)

# mkstemp creates 0600 files; run files are for every reader of the results, like any new file.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename, so readers never see partial files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON document at PATH, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
