"""Re-judge the raw outputs of run dirs with this checkout's scorer, adding the fields a newer
metric reads (e.g. argument precision/recall) to predictions.jsonl and applying the irrelevance rule
(eval.irrelevance_unparsed); reports every verdict that changes, by reason, and refuses if one
changes for any other reason.

    python scripts/rescore_predictions.py docs/results/cpu_study/runs
    python scripts/rescore_predictions.py --irrelevance-unparsed wrong RUN_DIR

Each run's examples come from its own run.json config (the same data, split and categories), so the
gold answers are the ones it was evaluated against.  Nothing is generated: only `raw` is re-read.
Where a verdict changes, metrics.json's overall and per-category figures are recomputed from the
rows (its wall time and peak memory kept); its `evaluation` section records the rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from agentcoder.config import EvalConfig
from agentcoder.data import load_splits
from agentcoder.evaluation.evaluator import judge
from agentcoder.evaluation.metrics import compute_metrics
from agentcoder.evaluation.scoring import IRRELEVANCE_RULES
from agentcoder.files import METRICS_FILE, PREDICTIONS_FILE, RUN_FILE, atomic_write_text, read_json
from agentcoder.tracking.records import atomic_write_json

VERDICT_KEYS = ("status", "correct", "reason", "function_match", "params_correct", "params_total")
# What the irrelevance rule may change: whether an unparseable answer to an irrelevance prompt is right.
RULE_KEYS = {"correct", "reason", "function_match"}


def change_reason(row: dict[str, Any], new: dict[str, Any], changed: list[str], rule: str) -> str | None:
    """Why a row's verdict changed, if the irrelevance rule explains it; None otherwise."""
    if not row.get("expects_call") and new["status"] == "failure" and set(changed) <= RULE_KEYS:
        return f"irrelevance_unparsed={rule}: an unparseable answer to an irrelevance prompt, now " + (
            "correct" if new["correct"] else "wrong")
    return None


def rescore(run_dir: Path, rule: str | None = None) -> tuple[int, Counter]:
    """Rescore RUN_DIR's predictions in place under irrelevance RULE (None: the run's own
    eval.irrelevance_unparsed, else the default); (rows that gained fields, changed verdicts by reason)."""
    cfg = OmegaConf.create(json.loads((run_dir / RUN_FILE).read_text())["config"])
    rule = rule or OmegaConf.select(cfg, "eval.irrelevance_unparsed", default=None) or EvalConfig.irrelevance_unparsed
    splits = load_splits(cfg)
    examples = {ex.id: ex for ex in getattr(splits, cfg.eval.split)}
    path = run_dir / PREDICTIONS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out, added, reasons = [], 0, Counter()
    for row in rows:
        new = judge(examples[row["id"]], row["raw"], parallel_matching=cfg.eval.parallel_matching,
                    irrelevance_unparsed=rule)
        changed = [k for k in VERDICT_KEYS if new[k] != row.get(k)]
        if changed:
            reason = change_reason(row, new, changed, rule)
            if reason is None:
                raise SystemExit(f"{run_dir}: {row['id']}: the verdict changed ({', '.join(changed)}) for a reason "
                                 f"other than the irrelevance rule; not rescored")
            reasons[reason] += 1
        fresh = {k: v for k, v in new.items() if k not in row}
        added += bool(fresh)
        out.append({**row, **fresh, **{k: new[k] for k in changed}})
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in out))
    _rewrite_metrics(run_dir, out, rule, recompute=bool(reasons))
    return added, reasons


def _rewrite_metrics(run_dir: Path, rows: list[dict[str, Any]], rule: str, *, recompute: bool) -> None:
    metrics = read_json(run_dir / METRICS_FILE)
    if metrics is None:
        return
    if recompute:
        overall = metrics.get("overall") or {}
        fresh = compute_metrics(rows, wall_time_s=overall.get("wall_time_s"),
                                peak_memory_bytes=overall.get("peak_memory_bytes"))
        fresh["overall"]["wall_time_s"] = overall.get("wall_time_s")
        metrics.update(fresh)
    metrics["evaluation"] = {**(metrics.get("evaluation") or {}), "irrelevance_unparsed": rule}
    atomic_write_json(run_dir / METRICS_FILE, metrics)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs, or folders of run dirs")
    parser.add_argument("--irrelevance-unparsed", choices=IRRELEVANCE_RULES, default=None,
                        help="the rule to apply (default: each run's eval.irrelevance_unparsed, else "
                             f"{EvalConfig.irrelevance_unparsed})")
    args = parser.parse_args(argv)
    runs = sorted({p.parent for d in args.dirs for p in ([d / RUN_FILE] if (d / RUN_FILE).is_file()
                                                         else d.glob(f"*/{RUN_FILE}"))})
    if not runs:
        sys.exit("no run dirs (folders with run.json) found")
    total, n_rows = Counter(), 0
    for run in runs:
        added, reasons = rescore(run, args.irrelevance_unparsed)
        n_rows += sum(1 for _ in (run / PREDICTIONS_FILE).open())
        total += reasons
        changed = "; ".join(f"{n} {why}" for why, n in reasons.items()) or "no verdict changed"
        print(f"{run}: {added} rows gained fields; {changed}")
    print(f"{len(runs)} runs, {n_rows} verdicts: {sum(total.values())} changed"
          + "".join(f"\n  {n}: {why}" for why, n in total.items()))


if __name__ == "__main__":
    main()
