"""Re-judge the raw outputs of run dirs with this checkout's scorer, adding the fields a newer
metric reads (e.g. argument precision/recall) to predictions.jsonl; refuses if any verdict changes.

    python scripts/rescore_predictions.py docs/results/cpu_study/runs

Each run's examples come from its own run.json config (the same data, split and categories), so the
gold answers are the ones it was evaluated against.  Nothing is generated: only `raw` is re-read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from agentcoder.data import load_splits
from agentcoder.evaluation.evaluator import judge
from agentcoder.files import RUN_FILE, atomic_write_text

VERDICT_KEYS = ("status", "correct", "reason", "function_match", "params_correct", "params_total")


def rescore(run_dir: Path) -> int:
    """Rescore RUN_DIR's predictions in place; the count of rows that gained fields."""
    cfg = OmegaConf.create(json.loads((run_dir / RUN_FILE).read_text())["config"])
    splits = load_splits(cfg)
    examples = {ex.id: ex for ex in getattr(splits, cfg.eval.split)}
    path = run_dir / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out, added = [], 0
    for row in rows:
        new = judge(examples[row["id"]], row["raw"], parallel_matching=cfg.eval.parallel_matching)
        changed = [k for k in VERDICT_KEYS if new[k] != row.get(k)]
        if changed:
            raise SystemExit(f"{run_dir}: {row['id']}: the verdict changed ({', '.join(changed)}); not rescored")
        fresh = {k: v for k, v in new.items() if k not in row}
        added += bool(fresh)
        out.append({**row, **fresh})
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in out))
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs, or folders of run dirs")
    args = parser.parse_args(argv)
    runs = sorted({p.parent for d in args.dirs for p in ([d / RUN_FILE] if (d / RUN_FILE).is_file()
                                                         else d.glob(f"*/{RUN_FILE}"))})
    if not runs:
        sys.exit("no run dirs (folders with run.json) found")
    for run in runs:
        print(f"{run}: {rescore(run)} rows gained fields")


if __name__ == "__main__":
    main()
