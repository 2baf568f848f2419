"""A run's final test metrics, sent to the trackers its training logged to (`method.train.report_to`).

transformers' integrations log the training curves; they end before the test evaluation, so the
figures a researcher compares runs by would be missing from the tracker's run list.  This sends
them, as `test/<metric>` and `test/<category>/exact_match`, to the same place:

- tensorboard: `<run_dir>/tensorboard` (where `tensorboard_callback` writes the curves), at the last step;
- mlflow: the run the training logged to (the active or the last active one), else a new run;
- wandb: the live run's summary (transformers leaves it open), else a new run in WANDB_PROJECT.

Other trackers transformers integrates get the training curves only (named in run.json).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

FINAL_TRACKERS = ("tensorboard", "mlflow", "wandb")
TENSORBOARD_DIR = "tensorboard"


def tensorboard_callback(run_dir: Path) -> Any:
    """transformers' TensorBoardCallback writing the training curves to <run_dir>/tensorboard."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR)))


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of metrics.json's overall and per-category exact match, flat."""
    out: dict[str, float] = {}
    for key, value in (metrics.get("overall") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[f"test/{key}"] = float(value)
    for cat, row in (metrics.get("per_category") or {}).items():
        value = (row or {}).get("exact_match")
        if isinstance(value, int | float) and math.isfinite(value):
            out[f"test/{cat}/exact_match"] = float(value)
    return out


def report_final(report_to: list[str], run_dir: Path, metrics: dict[str, Any], step: int = 0) -> dict[str, str]:
    """Send METRICS' scalars to each tracker of REPORT_TO; returns tracker -> where (or why not)."""
    scalars = final_scalars(metrics)
    done: dict[str, str] = {}
    for tracker in report_to:
        if tracker not in FINAL_TRACKERS:
            if tracker not in ("none", "all"):
                done[tracker] = "training curves only"
            continue
        try:
            done[tracker] = _SENDERS[tracker](run_dir, scalars, step)
        except Exception as err:  # noqa: BLE001 - a tracker outage must not fail a finished run
            done[tracker] = f"not sent: {type(err).__name__}: {err}"
    return done


def _tensorboard(run_dir: Path, scalars: dict[str, float], step: int) -> str:
    from torch.utils.tensorboard import SummaryWriter

    log_dir = run_dir / TENSORBOARD_DIR
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, value in scalars.items():
            writer.add_scalar(key, value, global_step=step)
    finally:
        writer.close()
    return str(log_dir)


def _mlflow(run_dir: Path, scalars: dict[str, float], step: int) -> str:
    import mlflow

    run = mlflow.active_run() or mlflow.last_active_run()
    if run is None:
        with mlflow.start_run(run_name=run_dir.name) as new:
            mlflow.log_metrics(scalars, step=step)
            return f"mlflow run {new.info.run_id}"
    mlflow.MlflowClient().log_batch(
        run.info.run_id, metrics=[mlflow.entities.Metric(k, v, _now_ms(), step) for k, v in scalars.items()])
    return f"mlflow run {run.info.run_id}"


def _wandb(run_dir: Path, scalars: dict[str, float], step: int) -> str:
    import wandb

    run = wandb.run or wandb.init(name=run_dir.name, dir=str(run_dir))
    run.summary.update(scalars)
    return f"wandb run {run.id}"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


_SENDERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}
