"""Run-level metrics from predictions.jsonl rows, overall and per category.

`METRICS` is the one definition of every share a run reports: `metrics.json` (`overall`,
`per_category`), the printed table, the comparator's tables and intervals and the config's
`eval.objective` choices all read it, so adding a metric is one entry there (plus, for a new
kind of per-example count, the field that `evaluator.judge` writes into each prediction row).

A metric with no eligible example is None rather than 0, so "not measured" never reads as "failed";
so is a metric the rows do not record (prediction rows written before the metric existed).
Every share carries its 95% Wilson interval (`<key>_ci`) and the count it is a share of
(`<key>_n`), so a 50-example figure shows how far it could move.

Speed has two figures that answer different questions: `ms_per_example` is throughput (the run's
wall time per example, batched), `latency_p50_s`/`latency_p95_s` are single-request latencies from
the rows that carry `latency_s` (the latency probe: a few examples generated alone, batch 1).

Importing this module is cheap (no numpy, scipy or torch): the config checks read `METRICS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    """One share of a run: the sum of `hit` over its prediction rows / the sum of `count`.

    `count(row)` says how many the row is out of: 0 leaves the row out (not eligible), 1 counts an
    example, larger values count arguments (`per="argument"`); None means every example counts once.
    `hit(row)` is the row's hits, read only where `count` is not 0. Both are whole numbers.
    `fields` are the prediction-row fields the two read: the comparator keeps exactly these, and a
    row where one is missing (None) does not record the metric.
    """

    name: str
    label: str  # the column title of the printed table and the comparator's tables
    hit: Callable[[Row], int]
    fields: tuple[str, ...]
    count: Callable[[Row], int] | None = None
    higher_is_better: bool = True
    per: Literal["example", "argument"] = "example"

    def terms(self, row: Row) -> tuple[int, int] | None:
        """(hits, count) of one prediction row; None when the row does not record the metric."""
        if any(row.get(f) is None for f in self.fields):
            return None
        n = 1 if self.count is None else int(self.count(row))
        return (int(self.hit(row)), n) if n else (0, 0)

    def totals(self, rows: Iterable[Row]) -> tuple[int, int] | None:
        """(hits, count) summed over ROWS; None when some row does not record the metric."""
        k = n = 0
        for row in rows:
            t = self.terms(row)
            if t is None:
                return None
            k, n = k + t[0], n + t[1]
        return k, n


def _func_right(r: Row) -> bool:
    return bool(r["expects_call"]) and bool(r["function_match"])


def _multi(r: Row) -> int:
    return int(int(r["n_gold_calls"]) > 1)


# The order is the column order of every table.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("exact_match", "EM", hit=lambda r: bool(r["correct"]), fields=("correct",)),
    Metric("function_selection", "func", hit=lambda r: bool(r["function_match"]),
           count=lambda r: bool(r["expects_call"]), fields=("expects_call", "function_match")),
    # A share of the gold arguments of correctly named calls (an omitted optional one counts as right).
    Metric("parameter_accuracy", "params", hit=lambda r: r["params_correct"],
           count=lambda r: r["params_total"] if _func_right(r) else 0,
           fields=("expects_call", "function_match", "params_correct", "params_total"), per="argument"),
    # Shares of predicted / of mandatory gold arguments (scoring.argument_counts defines the counts).
    Metric("argument_precision", "arg prec", hit=lambda r: r["pred_args_right"], count=lambda r: r["pred_args"],
           fields=("pred_args", "pred_args_right"), per="argument"),
    Metric("argument_recall", "arg rec", hit=lambda r: r["gold_args_right"], count=lambda r: r["gold_args"],
           fields=("gold_args", "gold_args_right"), per="argument"),
    Metric("multi_call_accuracy", "multi", hit=lambda r: bool(r["correct"]), count=_multi,
           fields=("correct", "n_gold_calls")),
    # Exact match where no call is expected: an abstention, and an unparseable answer too under
    # eval.irrelevance_unparsed=correct (BFCL's rule; parse_failure_rate still shows that share).
    Metric("irrelevance_accuracy", "irrel", hit=lambda r: bool(r["correct"]),
           count=lambda r: not r["expects_call"], fields=("expects_call", "correct")),
    Metric("parse_failure_rate", "parse fail", hit=lambda r: r["status"] == "failure", fields=("status",),
           higher_is_better=False),
)}


def metric_legend() -> str:
    """One line naming each column of METRICS (`EM: exact match; ...`), for tables' readers."""
    return "; ".join(f"{m.label}: {m.name.replace('_', ' ')}" + ("" if m.higher_is_better else " (lower is better)")
                     for m in METRICS.values())


# (key, title, width) of the printed table's columns besides the metrics.
_COUNT_COLUMN = ("n", "n", 4)
_SPEED_COLUMNS = (("ms_per_example", "ms/ex", 7), ("latency_p50_s", "p50_s", 6), ("latency_p95_s", "p95_s", 6))
_SHARE_WIDTH = 17  # `0.240 [0.14,0.38]`


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
    import numpy as np

    out_tokens = [int(r["output_tokens"]) for r in rows if r.get("output_tokens") is not None]
    latencies = [float(r["latency_s"]) for r in rows if r.get("latency_s") is not None]
    shares = [float(r["ms_per_example"]) / 1000 for r in rows if r.get("ms_per_example") is not None]

    elapsed = wall_time_s if wall_time_s is not None else (sum(shares) if shares else None)
    per_s = elapsed is not None and elapsed > 0
    out: dict[str, Any] = {"n": len(rows)}
    for metric in METRICS.values():
        out.update(_share(metric.name, metric.totals(rows)))
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


def _share(key: str, totals: tuple[int, int] | None) -> dict[str, Any]:
    if totals is None:  # the rows do not record this metric
        return {key: None, f"{key}_ci": None, f"{key}_n": None}
    k, n = totals
    ci = wilson_interval(k, n)
    return {key: k / n if n else None, f"{key}_ci": None if ci is None else list(ci), f"{key}_n": n}


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval for K successes in N trials (scipy's); None for N = 0.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0/n or n/n,
    which matters at the 50-example scale of a quick run.
    """
    if n <= 0:
        return None
    from scipy.stats import binomtest  # heavy: only where an interval is computed

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def percentile(values: list[float], q: float) -> float | None:
    """numpy's linear-interpolated percentile; None for no values."""
    if not len(values):
        return None
    import numpy as np

    return float(np.percentile(values, q))


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

    Shares read `0.240 [0.14,0.38]`: the share and its 95% Wilson interval.
    """
    if not metrics.get("overall") and metrics.get("evaluation", {}).get("final_evaluation"):
        return f"(no final evaluation: {metrics['evaluation']['final_evaluation']})"
    rows = [("overall", metrics.get("overall", {}))]
    rows += sorted(metrics.get("per_category", {}).items())
    label_w = max(8, *(len(name) for name, _ in rows))
    shares = [(m.name, m.label, _SHARE_WIDTH) for m in METRICS.values()]
    columns = [_COUNT_COLUMN, *shares, *_SPEED_COLUMNS]
    header = "".ljust(label_w) + "".join(" " + title.rjust(w) for _, title, w in columns)
    lines = [header]
    for name, m in rows:
        cells = [_fmt(m.get(k), w, m.get(f"{k}_ci") if k in METRICS else None) for k, _, w in columns]
        lines.append(name.ljust(label_w) + "".join(" " + c for c in cells))
    overall = metrics.get("overall", {})
    legend = f"({metric_legend()}; [lo,hi]: 95% Wilson interval; ms/ex: throughput"
    if overall.get("latency_n"):
        legend += f"; p50_s/p95_s: single-request latency over {overall['latency_n']} probe examples, batch 1"
    lines.append(legend + ")")
    return "\n".join(lines)
