"""The small files of a study's runs into its results folder: what `python -m agentcoder.compare` reads,
without adapters or checkpoints (scripts/cpu_study.sh, scripts/tuned_study.sh).

    python scripts/collect_runs.py multirun/tuned_study/study docs/results/tuned_study/runs
    python scripts/collect_runs.py --search multirun/tuned_study/search docs/results/tuned_study/search

Runs: each completed run dir of the sweep dir SOURCE goes to DEST/<name>, named by
method, init, fraction and seed (`dpo-f1.0-seed1`, `grpo-from-base-f1.0-seed2`, `lora-continued-f1.0-seed1`);
a run that did not complete is named and left out.  --search: every trial keeps its number, with the
sweep's multirun.yaml and optuna journal, so the search can go on from the copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentcoder.files import (  # noqa: E402
    BEST_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    STUDY_FILE,
    TRAIN_LOG_FILE,
)

SMALL_FILES = (RUN_FILE, METRICS_FILE, PREDICTIONS_FILE, TRAIN_LOG_FILE, BEST_FILE)


def run_name(run: dict) -> str:
    """DEST's folder name of a run.json."""
    cfg = run["config"]
    method, init = cfg["method"]["name"], cfg["method"].get("init")
    name = method
    if init == "base" and method != "lora":
        name += "-from-base"
    elif init == "sft" and method == "lora":
        name += "-continued"
    if method != "baseline":
        name += f"-f{cfg['data_fraction']}"
    return f"{name}-seed{cfg['seed']}"


def copy_small(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def collect_runs(source: Path, dest: Path) -> None:
    for rec in sorted(source.glob(f"*/{RUN_FILE}")):
        run = json.loads(rec.read_text())
        if run.get("status") != "completed":
            print(f"[collect] left out {rec.parent}: {run.get('status')}")
            continue
        target = dest / run_name(run)
        copy_small(rec.parent, target)
        print(f"[collect] {rec.parent} -> {target}")


def collect_search(source: Path, dest: Path) -> None:
    for name in ("multirun.yaml", STUDY_FILE):
        if (source / name).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    for rec in sorted(source.glob(f"*/{RUN_FILE}")):
        copy_small(rec.parent, dest / rec.parent.name)
    print(f"[collect] {source} -> {dest}: {len(list(dest.glob(f'*/{RUN_FILE}')))} trials")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--search", action="store_true", help="a search's sweep dir: trials keep their numbers")
    args = parser.parse_args()
    (collect_search if args.search else collect_runs)(args.source, args.dest)


if __name__ == "__main__":
    main()
