"""Accuracy at equal compute: each preference method (dpo, grpo, ppo) against the continued-SFT arm
(`method=lora method.init=sft`) that started from the same SFT stage, and test exact match against
the training time spent to get there (the stage's plus the arm's).

A run's compute is its own `train_time_s` plus, for a run that started from an SFT stage, that
stage's (`run.json["stage"]["train_time_s"]`), plus, for dpo, the time it spent sampling the policy for
its pairs (`run.json["pairs"]["sample_time_s"]`: a dpo record without it has no known compute); a
configuration's is the mean over its seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from agentcoder.compare.runs import UNTRAINED, Run
from agentcoder.compare.tables import RUN_DIRS_SEP, fraction_label
from agentcoder.files import RUN_FILE, read_json

COMPUTE_PNG = "accuracy_vs_compute.png"
INIT = "method.init="  # a variant's start: {INIT}sft from the SFT stage, {INIT}base from the base model
CONTINUED = f"{INIT}sft"
ARMS = ("dpo", "grpo", "ppo")
DPI = 110


def run_compute_s(run: Run) -> float | None:
    """RUN's training seconds, its SFT stage's included; None when its own are unknown."""
    own = run.row.get("train_time_s")
    if own is None or (isinstance(own, float) and math.isnan(own)):
        return 0.0 if run.row.get("method") in UNTRAINED else None
    record = read_json(run.dir / RUN_FILE) or {}
    if run.row.get("method") == "dpo":
        sampling = (record.get("pairs") or {}).get("sample_time_s")
        if sampling is None:
            return None  # a record from before sampling was timed: its compute is unknown, not less
        own = float(own) + float(sampling)
    stage = record.get("stage")
    if not stage:
        return float(own)
    # A record from before stages carried their time: the total is unknown, not the run's own.
    return float(own) + float(stage["train_time_s"]) if stage.get("train_time_s") is not None else None


def compute_frame(table: pd.DataFrame, by_dir: dict[str, Run]) -> pd.DataFrame:
    """The table's pretrained rows with `compute_s` (mean over seeds) and an `arm` label."""
    if table.empty:
        return table.assign(compute_s=[], arm=[])
    t = table[table["init"] != "random"].copy()

    def mean_compute(row: pd.Series) -> float:
        values = [run_compute_s(by_dir[d]) for d in str(row["run_dirs"]).split(RUN_DIRS_SEP) if d in by_dir]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else math.nan

    t["compute_s"] = t.apply(mean_compute, axis=1) if len(t) else []
    t["arm"] = [f"{m} ({v})" if v else m for m, v in zip(t["method"], t["variant"], strict=True)]
    return t


def is_continued(row: pd.Series) -> bool:
    return row["method"] == "lora" and CONTINUED in str(row.get("variant") or "")


def start_of(row: pd.Series | dict) -> str | None:
    """Where ROW's variant says its runs started: "base", "sft" (the SFT stage), or None where it does not."""
    variant = str(row.get("variant") or "")
    return next((start for start in ("base", "sft") if f"{INIT}{start}" in variant), None)


def start_label(row: pd.Series | dict) -> str:
    """ROW's variant as a legend within one method names it: where the run started when its variant sets
    `method.init` (whose other overrides are too long for a legend; the tables keep them), else the variant."""
    if is_continued(row):
        return "continued SFT"
    return {"base": "from base", "sft": "from the SFT stage"}.get(start_of(row), str(row.get("variant") or ""))


def short_arm(row: pd.Series) -> str:
    """A legend's name of ROW: the method and where it started (a variant's full overrides are too long
    for a legend; the report's tables keep them)."""
    start = start_label(row)
    if is_continued(row):
        return f"lora, {start}"
    return f"{row['method']} {start}" if row["method"] in ARMS and start == "from base" else row["method"]


def plot_accuracy_vs_compute(table: pd.DataFrame, by_dir: dict[str, Run], path: Path) -> Path | None:
    """Test exact match against training time (stage + arm), one point per configuration with its 95%
    interval; drawn when some configuration started from an SFT stage (the equal-compute study)."""
    from agentcoder.tracking.trainlog import pyplot, save_png

    t = compute_frame(table, by_dir)
    t = t[t["exact_match_mean"].notna() & t["compute_s"].notna()] if not t.empty else t
    staged = [r for _, r in t.iterrows() if is_continued(r) or r["method"] in ARMS]
    if not staged:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for i, (_, r) in enumerate(t.sort_values("compute_s").iterrows()):
        y, lo, hi = 100 * r["exact_match_mean"], 100 * r["exact_match_lo"], 100 * r["exact_match_hi"]
        err = [[y - lo], [hi - y]] if not (math.isnan(lo) or math.isnan(hi)) else None
        label = f"{short_arm(r)}, {fraction_label(r['data_fraction'])}" if r["method"] not in UNTRAINED else r["arm"]
        ax.errorbar(r["compute_s"] / 60, y, yerr=err, fmt="o", capsize=3, color=f"C{i % 10}", label=label)
    ax.set_xlabel("training time, SFT stage + arm (min)")
    ax.set_ylabel("test exact match (%)")
    ax.set_title("accuracy vs compute (95% intervals over test examples)", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    fig.tight_layout()
    return save_png(fig, path, dpi=DPI)
