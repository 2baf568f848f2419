"""Run-level metrics from predictions.jsonl rows, overall and per category.

A metric with no eligible example is None rather than 0, so "not measured" never reads as "failed".
Every accuracy carries its 95% Wilson interval (`<key>_ci`) and the count it is a share of
(`<key>_n`), so a 50-example figure shows how far it could move.

Speed has two figures that answer different questions: `ms_per_example` is throughput (the run's
wall time per example, batched), `latency_p50_s`/`latency_p95_s` are single-request latencies from
the rows that carry `latency_s` (the latency probe: a few examples generated alone, batch 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the two-sided 95% normal quantile

# (key, title, width); accuracies are printed with their interval.
_COLUMNS = (
    ("n", "n", 4),
    ("exact_match", "EM", 17),
    ("function_selection", "func", 17),
    ("parameter_accuracy", "params", 17),
    ("irrelevance_accuracy", "irrel", 17),
    ("parse_failure_rate", "parse_fail", 17),
    ("ms_per_example", "ms/ex", 7),
    ("latency_p50_s", "p50_s", 6),
    ("latency_p95_s", "p95_s", 6),
)
_WITH_CI = {"exact_match", "function_selection", "parameter_accuracy", "irrelevance_accuracy", "parse_failure_rate"}


def compute_metrics(
    rows: list[dict], *, wall_time_s: float | None = None, peak_memory_bytes: int | None = None
) -> dict[str, Any]:
    """{"overall": {...}, "per_category": {category: {...}}} for one run's prediction rows."""
    overall = group_metrics(rows, wall_time_s=wall_time_s)
    overall["peak_memory_bytes"] = peak_memory_bytes
    categories = sorted({str(r.get("category", "")) for r in rows})
    # The wall time covers the whole run, so per-category throughput comes from the rows' shares.
    per_category = {
        c: group_metrics([r for r in rows if str(r.get("category", "")) == c]) for c in categories
    }
    return {"overall": overall, "per_category": per_category}


def group_metrics(rows: list[dict], *, wall_time_s: float | None = None) -> dict[str, Any]:
    """The metrics of one group of rows (see the module docstring for the None convention)."""
    expects = [r for r in rows if r.get("expects_call")]
    no_call_expected = [r for r in rows if not r.get("expects_call")]
    func_right = [r for r in expects if r.get("function_match")]
    multi = [r for r in rows if int(r.get("n_gold_calls") or 0) > 1]
    params_total = sum(int(r.get("params_total") or 0) for r in func_right)
    params_correct = sum(int(r.get("params_correct") or 0) for r in func_right)
    out_tokens = [int(r["output_tokens"]) for r in rows if r.get("output_tokens") is not None]
    latencies = [float(r["latency_s"]) for r in rows if r.get("latency_s") is not None]
    shares = [float(r["ms_per_example"]) / 1000 for r in rows if r.get("ms_per_example") is not None]

    elapsed = wall_time_s if wall_time_s is not None else (sum(shares) if shares else None)
    per_s = elapsed is not None and elapsed > 0
    out: dict[str, Any] = {"n": len(rows)}
    out.update(_accuracy("exact_match", rows, lambda r: bool(r.get("correct"))))
    out.update(_accuracy("function_selection", expects, lambda r: bool(r.get("function_match"))))
    # A share of arguments, not of examples: its n counts arguments of correctly named calls.
    out.update(_rate("parameter_accuracy", params_correct, params_total))
    out.update(_accuracy("multi_call_accuracy", multi, lambda r: bool(r.get("correct"))))
    # A parse failure is not an abstention: only a clean answer without a call counts.
    out.update(_accuracy("irrelevance_accuracy", no_call_expected, lambda r: r.get("status") == "no_call"))
    out.update(_accuracy("parse_failure_rate", rows, lambda r: r.get("status") == "failure"))
    out.update(
        {
            "mean_output_tokens": sum(out_tokens) / len(out_tokens) if out_tokens else None,
            "ms_per_example": 1000 * elapsed / len(rows) if per_s and rows else None,
            "examples_per_s": len(rows) / elapsed if per_s and rows else None,
            "tokens_per_s": sum(out_tokens) / elapsed if per_s and out_tokens else None,
            "latency_n": len(latencies),
            "latency_mean_s": float(np.mean(latencies)) if latencies else None,
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
        }
    )
    return out


def _accuracy(key: str, rows: list[dict], hit: Callable[[dict], bool]) -> dict[str, Any]:
    return _rate(key, sum(1 for r in rows if hit(r)), len(rows))


def _rate(key: str, k: int, n: int) -> dict[str, Any]:
    ci = wilson_interval(k, n)
    return {key: k / n if n else None, f"{key}_ci": None if ci is None else list(ci), f"{key}_n": n}


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for k successes in n trials (95% by default); None for n = 0.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0/n or n/n,
    which matters at the 50-example scale of a quick run.
    """
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: rounding must not move them
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def percentile(values: list[float], q: float) -> float | None:
    """numpy's linear-interpolated percentile; None for no values."""
    return float(np.percentile(values, q)) if len(values) else None


def _fmt(value: Any, width: int, ci: Any = None) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}"
        if ci is not None:
            text += f" [{ci[0]:.2f},{ci[1]:.2f}]"
        return text.rjust(width)
    return str(value).rjust(width)


def format_table(metrics: dict[str, Any]) -> str:
    """A compact plain-text table: the overall row, then one row per category.

    Accuracies read `0.240 [0.14,0.38]`: the share and its 95% Wilson interval.
    """
    rows = [("overall", metrics.get("overall", {}))]
    rows += sorted(metrics.get("per_category", {}).items())
    label_w = max(8, *(len(name) for name, _ in rows))
    header = "".ljust(label_w) + "".join(" " + title.rjust(w) for _, title, w in _COLUMNS)
    lines = [header]
    for name, m in rows:
        cells = [_fmt(m.get(k), w, m.get(f"{k}_ci") if k in _WITH_CI else None) for k, _, w in _COLUMNS]
        lines.append(name.ljust(label_w) + "".join(" " + c for c in cells))
    overall = metrics.get("overall", {})
    if overall.get("latency_n"):
        lines.append(f"(p50_s/p95_s: single-request latency over {overall['latency_n']} probe examples, batch 1; "
                     "ms/ex: throughput; [lo,hi]: 95% Wilson interval)")
    return "\n".join(lines)
