"""Training logs of a run: `train_log.jsonl` (one line per trainer log event), `loss_curve.png`
and, for RL methods, `reward_curve.png`.

Importable without torch or transformers: the TrainerCallback class is built on first use, so
readers (plots, comparisons) can use `read_train_log` / `plot_loss_curve` cheaply.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LOSS_CURVE_FILE = "loss_curve.png"
REWARD_CURVE_FILE = "reward_curve.png"


class TrainLog:
    """Append-only JSONL: each line is flushed at once, so a killed run keeps every line it wrote."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"time": round(time.time(), 3), **entry}, default=str)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a train log (a torn last line from a kill is skipped)."""
    entries = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except (ValueError, RecursionError):  # RecursionError: a value nested thousands deep
            continue
    return entries


def series(entries: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of KEY in a train log's ENTRIES.  A resumed run re-logs the steps after its
    checkpoint: the later line for a step wins."""
    by_step = {int(e["step"]): float(e[key]) for e in entries if e.get(key) is not None and "step" in e}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def plot_loss_curve(log_path: Path, png_path: Path) -> Path | None:
    """Training loss (and val exact match, right axis) per step; None when nothing was logged."""
    entries = read_train_log(log_path)
    steps, loss = series(entries, "loss")
    vsteps, vem = series(entries, "val_exact_match")
    if not steps and not vsteps:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(steps, loss, color="tab:blue", marker="." if len(steps) < 50 else None, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.grid(alpha=0.3)
    if vsteps:
        ax2 = ax.twinx()
        ax2.plot(vsteps, vem, color="tab:orange", marker="o", label="val exact match")
        ax2.set_ylabel("val exact match")
        ax2.set_ylim(-0.02, 1.02)
    _legend_above(ax, *([ax2] if vsteps else []))
    return _save(fig, png_path)


def plot_reward_curve(log_path: Path, png_path: Path) -> Path | None:
    """RL training: mean reward (with its std as a band) and the KL to the reference (right axis)
    per step, from the `reward`, `reward_std` and `kl` entries; None when no reward was logged."""
    entries = read_train_log(log_path)
    steps, reward = series(entries, "reward")
    if not steps:
        return None
    _, std = series([e for e in entries if "reward" in e], "reward_std")
    ksteps, kl = series(entries, "kl")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    marker = "." if len(steps) < 50 else None
    ax.plot(steps, reward, color="tab:green", marker=marker, label="reward (mean)")
    if len(std) == len(steps):
        lo = [r - s for r, s in zip(reward, std, strict=True)]
        hi = [r + s for r, s in zip(reward, std, strict=True)]
        ax.fill_between(steps, lo, hi, color="tab:green", alpha=0.15, label="reward ± std")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    twin = []
    if ksteps:
        twin = [ax.twinx()]
        twin[0].plot(ksteps, kl, color="tab:red", marker=marker, label="KL to reference")
        twin[0].set_ylabel("KL to reference")
    _legend_above(ax, *twin)
    return _save(fig, png_path)


def plot_dpo_curves(log_path: Path, png_path: Path) -> Path | None:
    """DPO's loss, and its reward margin and accuracy (right axis), per step; None when nothing was logged."""
    entries = read_train_log(log_path)
    steps, loss = series(entries, "loss")
    msteps, margin = series(entries, "rewards/margins")
    if not msteps:
        return None
    _, accuracy = series(entries, "rewards/accuracies")
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(steps, loss, color="tab:blue", marker="." if len(steps) < 50 else None)
    ax.set(xlabel="step", ylabel="DPO loss", title="loss")
    ax2.plot(msteps, margin, color="tab:green", label="reward margin (chosen - rejected)")
    ax2.set(xlabel="step", ylabel="reward margin", title="rewards")
    if len(accuracy) == len(msteps):
        acc = ax2.twinx()
        acc.plot(msteps, accuracy, color="tab:orange", linestyle="--", label="reward accuracy")
        acc.set_ylabel("reward accuracy")
        acc.set_ylim(-0.02, 1.02)
        acc.legend(loc="lower right")
    ax2.legend(loc="upper left")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    return _save(fig, png_path)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, png_path: Path, *, dpi: int) -> Path:
    """Write FIG to PNG_PATH atomically and close it."""
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, png_path)  # readers never see a half-written image
    finally:
        pyplot().close(fig)
        tmp.unlink(missing_ok=True)
    return png_path


def _legend_above(ax: Any, *twins: Any) -> None:
    """One legend for AX and its twin axes, above the plot: inside it would hide the first points
    (a falling loss starts in the upper left corner)."""
    handles, labels = [], []
    for a in (ax, *twins):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=len(labels), frameon=False)


def _save(fig: Any, png_path: Path) -> Path:
    fig.tight_layout()
    return save_png(fig, png_path, dpi=100)


def train_log_callback(path: Path) -> Any:
    """A transformers TrainerCallback that appends every trainer log event (loss, lr, ...) to PATH."""
    from transformers import TrainerCallback

    log = TrainLog(path)

    class TrainLogCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero:  # a trainer resuming a checkpoint begins past step 0
                event = "resume" if state.global_step > 0 else "train_begin"
                log.append({"event": event, "step": state.global_step, "max_steps": state.max_steps})

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and logs:
                log.append({"step": state.global_step, **logs})

    return TrainLogCallback()
