"""The comparison's figures (matplotlib, Agg): accuracy vs data fraction, efficiency by quant, training curves.

Random-init runs are benchmarks of speed and memory, not of skill: they stay out of the accuracy
figure and are labelled where they appear.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agentcoder.compare.budget import COMPUTE_PNG, plot_accuracy_vs_compute, start_label, start_of
from agentcoder.compare.runs import UNTRAINED, Run
from agentcoder.compare.tables import fraction_label, model_label
from agentcoder.files import TRAIN_LOG_FILE
from agentcoder.tracking.trainlog import pyplot, save_png

ACCURACY_PNG = "accuracy_vs_fraction.png"
EFFICIENCY_PNG = "efficiency_by_quant.png"
CURVES_PNG = "training_curves.png"
QUANT_ORDER = ("none", "8bit", "4bit")
DPI = 110


def _quants(values: Any) -> list[str]:
    present = {str(v) for v in values}
    return [q for q in QUANT_ORDER if q in present] + sorted(present - set(QUANT_ORDER))


def _series_label(row: pd.Series, many_models: bool, many_sets: bool) -> str:
    label = str(row["method"])
    if many_models:
        label = f"{row['model']} {label}"
    if many_sets:
        label += f" [set {row['example_set']}]"
    return label


def accuracy_rows(table: pd.DataFrame, metric: str = "exact_match") -> tuple[pd.DataFrame, bool]:
    """The rows the accuracy figure shows: pretrained models only; random-init rows only when there is
    nothing else (a smoke grid), and then the figure says so in red."""
    if table.empty:
        return table, False
    measured = table[table[f"{metric}_mean"].notna()]
    pretrained = measured[measured["init"] != "random"]
    return (pretrained, False) if len(pretrained) or measured.empty else (measured, True)


def plot_accuracy(table: pd.DataFrame, path: Path, metric: str = "exact_match") -> Path | None:
    """Accuracy vs data fraction: a panel per quant, a line per method (95% interval as error bars).

    Untrained methods (baseline) have no fraction: a dashed level with its interval shaded.
    """
    df, random_only = accuracy_rows(table, metric)
    if df.empty:
        return None
    plt = pyplot()
    quants = _quants(df["quant"])
    width = max(7.0, 4.6 * len(quants) + 0.6)  # one panel still fits its two-line title
    fig, axes = plt.subplots(1, len(quants), figsize=(width, 4.2), sharey=True, squeeze=False)
    many_models = df["model"].nunique() > 1
    many_sets = df.groupby(["model", "method", "quant"])["example_set"].nunique().max() > 1
    fractions = sorted(df["data_fraction"].dropna().unique())
    xmin, xmax = (min(fractions), max(fractions)) if fractions else (0.0, 1.0)
    pad = 0.05 * (xmax - xmin or 1.0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series_keys = sorted({_series_label(r, many_models, many_sets) for _, r in df.iterrows()})
    color_of = {k: colors[i % len(colors)] for i, k in enumerate(series_keys)}
    for ax, quant in zip(axes[0], quants, strict=True):
        sub = df[df["quant"] == quant]
        for label, line in sub.groupby(sub.apply(lambda r: _series_label(r, many_models, many_sets), axis=1)):
            line = line.sort_values("data_fraction")
            y = line[f"{metric}_mean"].to_numpy() * 100
            lo = line[f"{metric}_lo"].to_numpy() * 100
            hi = line[f"{metric}_hi"].to_numpy() * 100
            c = color_of[label]
            if line["method"].iloc[0] in UNTRAINED or line["data_fraction"].isna().all():
                ax.axhline(y[0], color=c, linestyle="--", label=f"{label} (no training)")
                if not math.isnan(lo[0]):
                    ax.axhspan(lo[0], hi[0], color=c, alpha=0.12)
                continue
            x = line["data_fraction"].to_numpy(dtype=float)
            yerr = np.vstack([y - lo, hi - y])
            yerr = None if np.isnan(yerr).all() else np.nan_to_num(yerr)
            ax.errorbar(x, y, yerr=yerr, color=c, marker="o", capsize=3, label=label)
        ax.set_title(f"quant={quant}")
        ax.set_xlabel("data fraction (share of the train split)")
        ax.set_xlim(xmin - pad, xmax + pad)
        if fractions:
            ax.set_xticks(fractions)
            ax.set_xticklabels([fraction_label(f) for f in fractions])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (%), 95% interval")
    axes[0][0].set_ylim(-2, 102)
    n = df["n"].dropna()
    sizes = "/".join(str(int(v)) for v in sorted(n.unique(), reverse=True))
    fig.suptitle(f"Test {metric.replace('_', ' ')} vs training data\n(n={sizes} test examples; mean over seeds)")
    if random_only:
        fig.text(0.5, 0.005, "random-init models only: a pipeline check, not a measure of skill",
                 ha="center", va="bottom", color="red", fontsize=11)
    fig.tight_layout(rect=(0, 0.05 if random_only else 0, 1, 1))
    return save_png(fig, path, dpi=DPI)


def _largest_fraction(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, init, method, quant) the row at the largest data fraction (untrained rows as they are)."""
    keep = []
    for _, sub in df.groupby(["model", "init", "method", "quant"], dropna=False):
        fr = sub["data_fraction"]
        keep.append(sub if fr.isna().all() else sub[fr == fr.max()])
    return pd.concat(keep) if keep else df


def plot_efficiency(table: pd.DataFrame, path: Path) -> Path | None:
    """Latency p50/p95, peak memory and train time per quant, bars per method (largest fraction)."""
    if table.empty:
        return None
    df = _largest_fraction(table)
    if df[["latency_p50_s_mean", "peak_memory_bytes_mean", "train_time_s_mean"]].isna().all().all():
        return None
    plt = pyplot()
    quants = _quants(df["quant"])
    series = sorted({(model_label(r), str(r["method"])) for _, r in df.iterrows()})
    many_models = len({m for m, _ in series}) > 1
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / max(1, len(series))
    x0 = np.arange(len(quants))
    panels = (
        ("latency_p50_s_mean", "latency per example (s): bar p50, whisker p95", 1.0),
        ("peak_memory_bytes_mean", "peak memory (GiB)", 1 / 2**30),
        ("train_time_s_mean", "train time (s)", 1.0),
    )
    for ax, (col, title, scale) in zip(axes, panels, strict=True):
        for i, (model, method) in enumerate(series):
            sel = df[(df.apply(model_label, axis=1) == model) & (df["method"] == method)]
            ys, p95 = [], []
            for q in quants:
                r = sel[sel["quant"] == q]
                ys.append(float(r[col].iloc[0]) * scale if len(r) else math.nan)
                p95.append(float(r["latency_p95_s_mean"].iloc[0]) if len(r) else math.nan)
            label = f"{model} {method}" if many_models else method
            if "random-init" in model and not many_models:
                label += " (random-init)"
            xs = x0 + (i - (len(series) - 1) / 2) * width
            ax.bar(xs, np.nan_to_num(ys), width, label=label)
            if col == "latency_p50_s_mean":
                ok = ~np.isnan(p95)
                ax.errorbar(xs[ok], np.array(ys)[ok], yerr=[np.zeros(ok.sum()), (np.array(p95) - np.array(ys))[ok]],
                            fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(x0)
        ax.set_xticklabels(quants)
        ax.set_xlabel("quant")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fractions = sorted(df["data_fraction"].dropna().unique())
    fig.suptitle("Cost by quantization" + (f" (trained methods at data fraction {fraction_label(fractions[-1])})"
                                           if fractions else ""))
    fig.tight_layout(rect=(0, 0.04 + 0.04 * math.ceil(len(labels) / 4), 1, 1))
    return save_png(fig, path, dpi=DPI)


def plot_training_curves(runs: list[Run], path: Path) -> Path | None:
    """Train loss (top) and val exact match (bottom), a column per method, a line per run."""
    from agentcoder.tracking.trainlog import read_train_log, series

    logs = []
    for run in runs:
        if run.row["status"] != "completed" or not run.row.get("has_train_log"):
            continue
        entries = read_train_log(run.dir / TRAIN_LOG_FILE)
        loss, val = series(entries, "loss"), series(entries, "val_exact_match")
        if loss[0] or val[0]:
            logs.append((run.row, loss, val))
    if not logs:
        return None
    plt = pyplot()
    methods = sorted({str(r["method"]) for r, _, _ in logs})
    has_val = any(v[0] for _, _, v in logs)
    nrows = 2 if has_val else 1
    fig, axes = plt.subplots(nrows, len(methods), figsize=(max(7.0, 5.2 * len(methods) + 0.5), 3.6 * nrows),
                             squeeze=False, sharex="col")
    fractions = sorted({r["data_fraction"] for r, _, _ in logs if r.get("data_fraction") is not None})
    cmap = plt.get_cmap("viridis")
    color_of = {f: cmap(0.15 + 0.7 * i / max(1, len(fractions) - 1)) for i, f in enumerate(fractions)}
    styles = {q: s for q, s in zip(QUANT_ORDER, ("-", "--", ":"), strict=True)}
    for col, method in enumerate(methods):
        seen: set[str] = set()
        for row, loss, val in logs:
            if str(row["method"]) != method:
                continue
            label = f"{row['quant']} frac={fraction_label(row['data_fraction'])}"
            if row.get("init") == "random":
                label += " random-init"
            if row.get("variant"):
                label += f" {start_label(row)}"
            from_base = start_of(row) == "base"
            kw = {"color": "tab:red" if from_base else color_of.get(row["data_fraction"], "gray"),
                  "linestyle": styles.get(row["quant"], "-."),
                  "alpha": 0.85, "linewidth": 1.2, "label": None if label in seen else label}
            seen.add(label)
            axes[0][col].plot(*loss, **kw)
            if has_val and val[0]:
                axes[1][col].plot(*val, marker="o", markersize=3, **kw)
        axes[0][col].set_title(f"method={method}")
        axes[0][col].set_ylabel("train loss")
        axes[0][col].grid(alpha=0.3)
        axes[0][col].legend(fontsize=7, loc="upper right")
        if has_val:
            axes[1][col].set_ylabel("val exact match")
            axes[1][col].set_ylim(-0.02, 1.02)
            axes[1][col].grid(alpha=0.3)
        axes[-1][col].set_xlabel("step")
    fig.suptitle("Training curves: one line per run\n(colour: data fraction, line style: quant)", fontsize=11)
    fig.tight_layout()
    return save_png(fig, path, dpi=DPI)


def write_plots(table: pd.DataFrame, runs: list[Run], out_dir: Path) -> list[Path]:
    """Every figure that has data, written into OUT_DIR; the paths written."""
    written = [
        plot_accuracy(table, out_dir / ACCURACY_PNG),
        plot_efficiency(table, out_dir / EFFICIENCY_PNG),
        plot_training_curves(runs, out_dir / CURVES_PNG),
        plot_accuracy_vs_compute(table, {r.name: r for r in runs}, out_dir / COMPUTE_PNG),
    ]
    return [p for p in written if p is not None]
