"""python -m agentcoder.compare [DIRS...] [--where KEY=V[,V] ...] [--out DIR] [--report] [--diff RUN_A RUN_B]"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_DIRS = ("outputs", "multirun")
DEFAULT_OUT = "comparison"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agentcoder.compare",
        description="Compare agentcoder runs: one table (mean ± std over seeds, 95%% interval over test examples), "
                    "failures apart, errors by matcher reason, plots; --report answers the research questions.",
    )
    p.add_argument("dirs", nargs="*", type=Path,
                   help=f"run dirs or folders searched for run.json (default: {' '.join(DEFAULT_DIRS)})")
    p.add_argument("--where", nargs="+", action="extend", default=[], metavar="KEY=V[,V]",
                   help="keep runs whose column or config key matches, e.g. --where method=lora,dpo quant=4bit "
                        "(put DIRS before --where)")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                   help=f"folder for comparison.csv, comparison.md, runs.csv, PNGs (default: {DEFAULT_OUT}/)")
    p.add_argument("--report", action="store_true", help="also write report.md (tables, plots, research questions)")
    p.add_argument("--diff", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                   help="compare two run dirs example by example (McNemar's exact test); writes diff.csv")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval (default 2000)")
    return p


def _fail(message: str) -> None:
    print(f"agentcoder.compare: {message}", file=sys.stderr)
    sys.exit(2)


def _print_frame(console: object, title: str, df: object) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for col in df.columns:
        table.add_column(str(col), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*("-" if v is None else str(v) for v in row))
    console.print(table)


def write_whole(out: Path, write: Callable[[Path], list[str]]) -> list[str]:
    """WRITE(folder) -> file names, run into a staging folder inside OUT, whose files then replace
    OUT's: a write that fails (full or read-only disk) leaves OUT as it was, not half old, half new."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(errno.EEXIST, "it is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".compare-", dir=out))
    try:
        names = write(stage)
        for name in names:
            os.replace(stage / name, out / name)
        return names
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def run_diff(a: Path, b: Path, out: Path) -> None:
    from agentcoder.compare.diff import DiffError, diff_runs
    from agentcoder.files import atomic_write_text

    try:
        d = diff_runs(a, b)
    except DiffError as err:
        _fail(str(err))
    print(d.render())
    def write_csv(stage: Path) -> list[str]:
        atomic_write_text(stage / "diff.csv", d.examples.to_csv(index=False))
        return ["diff.csv"]

    try:
        write_whole(out, write_csv)
    except OSError as err:
        _fail(f"--out {out}: cannot write diff.csv ({err.strerror or err})")
    print(f"\nper-example verdicts: {out / 'diff.csv'}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # The bootstrap's matrix products are small: BLAS threads only add overhead (numpy is not loaded yet).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if args.diff:
        run_diff(*args.diff, args.out)
        return

    t0 = time.perf_counter()
    from rich.console import Console

    from agentcoder.compare import tables
    from agentcoder.compare.runs import FilterError, filter_runs, load_runs, parse_where
    from agentcoder.compare.search import (
        display_frame,
        is_trial,
        load_searches,
        report_section,
        summary_lines,
        write_search,
    )
    from agentcoder.evaluation.metrics import metric_legend
    from agentcoder.files import atomic_write_text

    dirs = args.dirs or [Path(d) for d in DEFAULT_DIRS if Path(d).is_dir()]
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        _fail(f"no such directory: {', '.join(missing)}")
    runs = load_runs(dirs)
    try:
        runs = filter_runs(runs, parse_where(args.where))
    except FilterError as err:
        _fail(str(err))
    # A search's trials are read on val: its own view, never the method tables.
    searches = load_searches(dirs)
    runs = [r for r in runs if not is_trial(r)]
    if not runs and not searches:
        where = f" matching --where {' '.join(args.where)}" if args.where else ""
        searched = " ".join(map(str, dirs)) if dirs else f"{' or '.join(DEFAULT_DIRS)} (neither exists here)"
        _fail(f"no run dirs (folders with run.json) and no search{where} under {searched}")

    table = tables.comparison_table(runs, resamples=args.resamples)
    failures = tables.failures_table(runs)
    reasons = tables.reasons_table(runs)
    notes = tables.set_notes(table) + [
        f"{r.name}: {r.row['torn_lines']} line(s) of predictions.jsonl unreadable (torn or not JSON), left out of "
        f"its examples" for r in runs if r.row.get("torn_lines")]
    shown = tables.display_table(table, sep="\n")

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped into a file: room for the whole table
    n_ok = sum(r.row["status"] == "completed" for r in runs)
    for search in searches:
        if not search.trials.empty:
            _print_frame(console, f"search {search.label}: trials (objective on val)", display_frame(search))
        for line in summary_lines(search):
            console.print(line)
    if table.empty and searches and not runs:
        pass  # a search alone: its trials are all there is
    elif table.empty:
        console.print("[bold]no completed run[/] among the run dirs found")
    else:
        _print_frame(console, f"{n_ok} completed runs in {len(table)} configurations "
                     "(accuracies in %: mean ±std over seeds [95% interval over test examples])", shown)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")
    if not failures.empty:
        _print_frame(console, f"{len(failures)} runs not in the means", failures.drop(columns=["started_at"]))
    if not reasons.empty:
        _print_frame(console, "errors by matcher reason (share of evaluated examples)", tables.percent_frame(reasons))

    def write_all(out: Path) -> list[str]:
        atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
        atomic_write_text(out / "runs.csv", tables.runs_frame(runs).to_csv(index=False))
        atomic_write_text(out / "failures.csv", failures.to_csv(index=False))
        atomic_write_text(out / "reasons.csv", reasons.to_csv(index=False))
        md = [
            "# Comparison\n",
            "Accuracies in %: mean ±std over seeds [95% bootstrap interval over test examples]; "
            f"`-`: not measured. Columns: {metric_legend()}.\n",
            tables.to_markdown(tables.display_table(table)),
            *(["\n" + "\n".join(f"- {n}" for n in notes) + "\n"] if notes else []),
            "\n## Errors by matcher reason\n",
            tables.to_markdown(tables.percent_frame(reasons)) if not reasons.empty else "_(no predictions)_\n",
            "\n## Not in the means\n",
            tables.to_markdown(failures) if not failures.empty else "_(none)_\n",
        ]
        atomic_write_text(out / "comparison.md", "\n".join(md))
        plots = []
        if not args.no_plots:
            from agentcoder.compare.plots import write_plots

            plots = write_plots(table, runs, out)
        search_files = write_search(searches, out, plots=not args.no_plots) if searches else []
        if args.report:
            from agentcoder.compare.report import write_report

            write_report(out / "report.md", table, failures, reasons, runs, plots, notes, [str(d) for d in dirs],
                         search=report_section(searches, set(search_files)) if searches else "")
        return ["comparison.csv", "comparison.md", "runs.csv", "failures.csv", "reasons.csv",
                *(p.name for p in plots), *search_files, *(["report.md"] if args.report else [])]

    out = args.out
    try:
        written = write_whole(out, write_all)
    except OSError as err:
        _fail(f"--out {out}: cannot write the results ({err.strerror or err}); nothing was changed there")
    trials = sum(len(s.trials) for s in searches)
    searched = f", {len(searches)} search{'es' if len(searches) != 1 else ''} of {trials} trials" if searches else ""
    console.print(f"wrote {out}/: {', '.join(written)} ({time.perf_counter() - t0:.1f} s, {len(runs)} run dirs"
                  f"{searched})")


if __name__ == "__main__":
    main()
