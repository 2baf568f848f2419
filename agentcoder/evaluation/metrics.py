"""Run-level metrics from predictions.jsonl rows, overall and per category.

A metric with no eligible example is None rather than 0, so "not measured" never reads as "failed".
"""

from __future__ import annotations

import math
from typing import Any

_COLUMNS = (
    ("n", "n", 5),
    ("exact_match", "EM", 7),
    ("function_selection", "func", 7),
    ("parameter_accuracy", "params", 7),
    ("irrelevance_accuracy", "irrel", 7),
    ("parse_failure_rate", "parse_fail", 10),
    ("latency_p50_s", "p50_s", 7),
    ("latency_p95_s", "p95_s", 7),
)


def compute_metrics(
    rows: list[dict], *, wall_time_s: float | None = None, peak_memory_bytes: int | None = None
) -> dict[str, Any]:
    """{"overall": {...}, "per_category": {category: {...}}} for one run's prediction rows."""
    overall = group_metrics(rows, wall_time_s=wall_time_s)
    overall["peak_memory_bytes"] = peak_memory_bytes
    categories = sorted({str(r.get("category", "")) for r in rows})
    # The wall time covers the whole run, so per-category throughput comes from latencies.
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
    latencies = sorted(float(r["latency_s"]) for r in rows if r.get("latency_s") is not None)

    elapsed = wall_time_s if wall_time_s is not None else (sum(latencies) if latencies else None)
    per_s = elapsed is not None and elapsed > 0
    return {
        "n": len(rows),
        "exact_match": _share(rows, lambda r: bool(r.get("correct"))),
        "function_selection": _share(expects, lambda r: bool(r.get("function_match"))),
        "parameter_accuracy": params_correct / params_total if params_total else None,
        "multi_call_accuracy": _share(multi, lambda r: bool(r.get("correct"))),
        # A parse failure is not an abstention: only a clean answer without a call counts.
        "irrelevance_accuracy": _share(no_call_expected, lambda r: r.get("status") == "no_call"),
        "parse_failure_rate": _share(rows, lambda r: r.get("status") == "failure"),
        "mean_output_tokens": sum(out_tokens) / len(out_tokens) if out_tokens else None,
        "latency_mean_s": sum(latencies) / len(latencies) if latencies else None,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "examples_per_s": len(rows) / elapsed if per_s and rows else None,
        "tokens_per_s": sum(out_tokens) / elapsed if per_s and out_tokens else None,
    }


def _share(rows: list[dict], pred: Any) -> float | None:
    return sum(1 for r in rows if pred(r)) / len(rows) if rows else None


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _fmt(value: Any, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.3f}".rjust(width)
    return str(value).rjust(width)


def format_table(metrics: dict[str, Any]) -> str:
    """A compact plain-text table: the overall row, then one row per category."""
    rows = [("overall", metrics.get("overall", {}))]
    rows += sorted(metrics.get("per_category", {}).items())
    label_w = max(8, *(len(name) for name, _ in rows))
    header = "".ljust(label_w) + "".join(" " + title.rjust(w) for _, title, w in _COLUMNS)
    lines = [header]
    for name, m in rows:
        lines.append(name.ljust(label_w) + "".join(" " + _fmt(m.get(key), w) for key, _, w in _COLUMNS))
    return "\n".join(lines)
