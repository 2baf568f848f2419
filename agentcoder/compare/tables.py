"""The comparison tables: one row per configuration (seeds averaged), failures apart, errors by reason.

A configuration is (model, init, method, quant, data, data_fraction, split, example set).  The
example set is part of the key because a score on other examples is another measurement: two runs
evaluated on different example sets are shown as two rows, never averaged.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from agentcoder.compare.runs import UNTRAINED, Run, mark_variants
from agentcoder.compare.stats import DEFAULT_RESAMPLES, bootstrap_interval, bootstrap_weights, example_terms
from agentcoder.evaluation.metrics import METRICS, wilson_interval

GROUP_KEYS = ("model", "init", "method", "quant", "data", "data_fraction", "split", "example_set", "variant")
RUN_DIRS_SEP = ";"  # between the run dirs of one row (paths may hold spaces)
# Columns besides the shares of metrics.METRICS, averaged over seeds.
MEASURES = ("latency_p50_s", "latency_p95_s", "ms_per_example", "train_time_s", "peak_memory_bytes")


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run dir, every status (the raw material of the other tables)."""
    df = pd.DataFrame([r.row for r in runs])
    if df.empty:
        return df
    # A method that trains nothing has no data fraction: its runs at 0.1 and 1.0 are one configuration.
    df["data_fraction"] = df["data_fraction"].where(~df["method"].isin(UNTRAINED), np.nan)
    return df


def _group_key(row: dict[str, Any]) -> tuple:
    key = []
    for k in GROUP_KEYS:
        v = row.get(k)
        if k == "data_fraction" and row.get("method") in UNTRAINED:
            v = None
        key.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    return tuple(key)


def _sort_key(key: tuple) -> tuple:
    return tuple((v is None, str(v) if not isinstance(v, float) else f"{v:012.6f}") for v in key)


def comparison_table(runs: list[Run], resamples: int = DEFAULT_RESAMPLES) -> pd.DataFrame:
    """Completed runs grouped by configuration: mean, std over seeds and a 95% interval per accuracy.

    The interval is a bootstrap over test examples (all seeds resampled together) when every run
    of the group has its predictions; otherwise Wilson's interval on the mean, where the number of
    eligible examples is known (exact match and parse failures: all n).  A share of exactly 0 or 1
    leaves the bootstrap no spread to measure, so it gets Wilson's interval too.
    """
    mark_variants(runs, lambda row: _group_key(row)[:-1])
    completed = [r for r in runs if r.row["status"] == "completed"]
    others: dict[tuple, Counter] = {}
    for r in runs:
        if r.row["status"] != "completed":
            others.setdefault(_group_key(r.row)[:6], Counter())[r.row["status"]] += 1
    groups: dict[tuple, list[Run]] = {}
    for run in completed:
        groups.setdefault(_group_key(run.row), []).append(run)

    rows = []
    for key in sorted(groups, key=_sort_key):
        members = sorted(groups[key], key=lambda r: (r.row.get("seed") is None, r.row.get("seed") or 0))
        out: dict[str, Any] = dict(zip(GROUP_KEYS, key, strict=True))
        seeds = [r.row.get("seed") for r in members]
        out["seeds"] = ",".join(str(s) for s in seeds)
        out["runs"] = len(members)
        out["n"] = members[0].row.get("n")
        preds = [r.predictions for r in members]
        bootstrap = all(p for p in preds)
        out["ci_method"] = "bootstrap" if bootstrap else "wilson"
        weights = bootstrap_weights(len(preds[0]), resamples) if bootstrap else None
        for metric in METRICS:
            out.update(_accuracy_stats(members, metric, weights))
        for measure in MEASURES:
            vals = np.array([r.row[measure] for r in members if r.row.get(measure) is not None], dtype=float)
            out[f"{measure}_mean"] = float(vals.mean()) if vals.size else math.nan
            out[f"{measure}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        # Runs of the same configuration that are not in the means, e.g. "3 ok, 1 failed".
        not_in = sorted(others.get(key[:6], {}).items())
        out["status"] = ", ".join([f"{len(members)} ok", *(f"{n} {status}" for status, n in not_in)])
        out["run_dirs"] = RUN_DIRS_SEP.join(r.name for r in members)
        rows.append(out)
    return pd.DataFrame(rows)


def _accuracy_stats(members: list[Run], metric: str, weights: np.ndarray | None) -> dict[str, float]:
    """Mean and std over the runs of one configuration, and the 95% interval (see comparison_table)."""
    spec = METRICS[metric]
    vals = np.array([r.row[metric] for r in members if r.row.get(metric) is not None], dtype=float)
    mean = float(vals.mean()) if vals.size else math.nan
    std = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
    lo = hi = math.nan
    first = members[0].row
    if not vals.size:
        return {f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_lo": lo, f"{metric}_hi": hi}
    terms = example_terms([r.predictions for r in members], metric) if weights is not None else None
    if terms is not None:
        num, den = terms
        lo, hi = bootstrap_interval(num, den, weights)
        if lo == hi and spec.per == "example":
            # All right or all wrong: every resample agrees, yet 0 of 50 is not a certain 0%.
            n = int(den.sum(axis=1).mean())
            lo, hi = _wilson_of_mean(mean, n)
    elif len(members) == 1 and first.get(f"{metric}_ci"):
        lo, hi = first[f"{metric}_ci"]
    elif first.get(f"{metric}_n") or (spec.count is None and first.get("n")):
        lo, hi = _wilson_of_mean(mean, int(first.get(f"{metric}_n") or first["n"]))
    return {f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_lo": lo, f"{metric}_hi": hi}


def _wilson_of_mean(mean: float, n: int) -> tuple[float, float]:
    """Wilson's interval for a share MEAN of N (a mean over seeds, so its count is rounded to a whole one)."""
    ci = wilson_interval(round(mean * n), n)
    return ci if ci is not None else (math.nan, math.nan)


def failures_table(runs: list[Run]) -> pd.DataFrame:
    """Runs that are not in the means: failed, running (or killed), incomplete, superseded, unreadable."""
    mark_variants(runs, lambda row: _group_key(row)[:-1])  # duplicates are listed here too
    cols = ["status", "method", "model", "quant", "data_fraction", "seed", "error", "started_at", "run_dir"]
    rows = [{c: r.row.get(c) for c in cols} for r in runs if r.row["status"] != "completed"]
    return pd.DataFrame(rows, columns=cols)


def reason_kind(reason: Any) -> str:
    """`wrong_value:city` -> `wrong_value`: the matcher's rule, without the argument name."""
    return str(reason).split(":", 1)[0]


def reasons_table(runs: list[Run]) -> pd.DataFrame:
    """Share of evaluated examples per matcher reason, per method and variant (completed runs with
    predictions): runs that differ in more than their seeds (grpo from base and from the SFT stage)
    fail in different ways, so they are never pooled."""
    counts: dict[str, Counter] = {}
    totals: Counter = Counter()
    nruns: Counter = Counter()
    for run in runs:
        if run.row["status"] != "completed" or not run.predictions:
            continue
        variant = run.row.get("variant")
        method = f"{run.row.get('method')} ({variant})" if variant else str(run.row.get("method"))
        nruns[method] += 1
        c = counts.setdefault(method, Counter())
        for p in run.predictions:
            totals[method] += 1
            c["correct" if p.get("correct") else reason_kind(p.get("reason"))] += 1
    if not counts:
        return pd.DataFrame()
    order = [k for k, _ in sum(counts.values(), Counter()).most_common() if k != "correct"]
    rows = []
    for method in sorted(counts):
        row: dict[str, Any] = {"method": method, "runs": nruns[method], "examples": totals[method],
                               "correct": counts[method]["correct"] / totals[method]}
        row.update({k: counts[method][k] / totals[method] for k in order})
        rows.append(row)
    return pd.DataFrame(rows)


def set_notes(table: pd.DataFrame) -> list[str]:
    """One line per configuration that appears with more than one example set (and so more than one row)."""
    if table.empty:
        return []
    notes = []
    keys = [k for k in GROUP_KEYS if k not in ("example_set", "split")]
    for key, sub in table.groupby(keys, dropna=False, sort=True):
        if len(sub) > 1:
            sets = ", ".join(f"{s} (n={n})" for s, n in zip(sub["example_set"], sub["n"], strict=True))
            label = "/".join(str(k) for k in key if k is not None and not (isinstance(k, float) and math.isnan(k)))
            notes.append(f"{label}: {len(sub)} rows, evaluated on different example sets ({sets}); "
                         "scores on different examples are not averaged")
    return notes


# --------------------------------------------------------------------------- formatting


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: Any, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def accuracy_cell(row: pd.Series, metric: str, sep: str = " ") -> str:
    """`41.3 ±2.1 [28.0, 54.0]` in percent: mean, std over seeds (when >1 seed), 95% interval."""
    mean = row[f"{metric}_mean"]
    if math.isnan(mean):
        return "-"
    text = _pct(mean)
    if not math.isnan(row[f"{metric}_std"]):
        text += f" ±{_pct(row[f'{metric}_std'])}"
    if not math.isnan(row[f"{metric}_lo"]):
        text += f"{sep}[{_pct(row[f'{metric}_lo'])}, {_pct(row[f'{metric}_hi'])}]"
    return text


def model_label(row: pd.Series | dict) -> str:
    return f"{row['model']} (random-init)" if row.get("init") == "random" else str(row["model"])


def fraction_label(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def display_table(table: pd.DataFrame, sep: str = " ") -> pd.DataFrame:
    """The comparison table as strings, one column per quantity (what the console and markdown show)."""
    if table.empty:
        return table
    out = pd.DataFrame({
        "model": [model_label(r) for _, r in table.iterrows()],
        "method": table["method"],
        "quant": table["quant"],
        "frac": table["data_fraction"].map(fraction_label),
        "seeds": table["seeds"],
        "n": table["n"].map(lambda n: "-" if n is None or pd.isna(n) else str(int(n))),
    })
    for metric, spec in METRICS.items():
        out[spec.label] = [accuracy_cell(r, metric, sep) for _, r in table.iterrows()]
    out["p50 s"] = table["latency_p50_s_mean"].map(_num)
    out["p95 s"] = table["latency_p95_s_mean"].map(_num)
    out["train s"] = table["train_time_s_mean"].map(lambda x: _num(x, 0))
    out["peak GiB"] = table["peak_memory_bytes_mean"].map(lambda x: _num(x / 2**30 if x == x else x))
    if (table["variant"] != "").any():
        out.insert(4, "variant", table["variant"])
    if table["example_set"].nunique(dropna=False) > 1:
        out["set"] = table["example_set"].fillna("-")
    out["status"] = table["status"]
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which we do not depend on)."""
    if df.empty:
        return "_(none)_\n"
    cols = [str(c) for c in df.columns]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = "-" if math.isnan(v) else f"{v:.3g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def percent_frame(df: pd.DataFrame, skip: tuple[str, ...] = ("method", "runs", "examples")) -> pd.DataFrame:
    """Shares as percent strings (for the reasons table)."""
    out = df.copy()
    for c in out.columns:
        if c not in skip:
            out[c] = out[c].map(lambda x: "-" if x is None or x != x or x == 0 else f"{100 * x:.1f}%")
    return out
