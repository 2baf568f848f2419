"""The committed CPU study (docs/results/cpu_study/) regenerates from its committed run files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "results" / "cpu_study"
RUNS = "docs/results/cpu_study/runs"


def _report_body(path: Path) -> list[str]:
    # The first lines say when and from where the report was generated; the rest is the data.
    return [line for line in path.read_text().splitlines() if not line.startswith("Generated ")]


def test_compare_reproduces_the_committed_tables_and_report(tmp_path):
    import pandas as pd

    proc = subprocess.run([sys.executable, "-m", "agentcoder.compare", RUNS, "--report", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("comparison.csv", "reasons.csv", "runs.csv"):
        # Run dirs are named relative to the folder given, so the run-dir columns compare too.
        committed, fresh = (pd.read_csv(p) for p in (STUDY / name, tmp_path / name))
        pd.testing.assert_frame_equal(fresh, committed, check_exact=False, rtol=1e-9, obj=name)
    assert _report_body(tmp_path / "report.md") == _report_body(STUDY / "report.md")
    table = pd.read_csv(STUDY / "comparison.csv")
    # The study's design: every method, both seeds, all on the same 150 test examples.
    assert set(table["method"]) == {"baseline", "lora", "dpo", "grpo", "ppo"}
    assert (table["n"] == 150).all() and table["example_set"].nunique() == 1
    assert (table.loc[table["method"] != "baseline", "runs"] == 2).all()
    runs = pd.read_csv(STUDY / "runs.csv")
    assert set(runs["run_dir"]) == {p.name for p in (ROOT / RUNS).iterdir() if (p / "run.json").is_file()}
    # Their metrics.json files predate argument precision/recall; the predictions were rescored since
    # (scripts/rescore_predictions.py, verdicts unchanged), so the shares come from the rows.
    assert table[["argument_precision_mean", "argument_recall_mean"]].notna().all().all()
    assert runs["argument_recall_n"].notna().all()


@pytest.mark.slow
def test_analysis_notebook_executes_against_the_committed_runs():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(STUDY / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(STUDY)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs and not any(o.output_type == "error" for o in outputs)
