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
    # (scripts/rescore_predictions.py), so the shares come from the rows.
    assert table[["argument_precision_mean", "argument_recall_mean"]].notna().all().all()
    assert runs["argument_recall_n"].notna().all()


def test_the_study_is_scored_under_bfcls_irrelevance_rule_and_rescoring_reports_each_change(tmp_path, capsys):
    """The committed runs follow eval.irrelevance_unparsed=correct (rescored from their raw outputs);
    rescoring one under the strict rule and back names every verdict that changes, and why."""
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("rescore_predictions", ROOT / "scripts" / "rescore_predictions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    main = script.main
    for run in (ROOT / RUNS).iterdir():
        assert json.loads((run / "metrics.json").read_text())["evaluation"]["irrelevance_unparsed"] == "correct"
    run = tmp_path / "dpo-f1.0-seed1"
    shutil.copytree(ROOT / RUNS / run.name, run)
    main(["--irrelevance-unparsed", "wrong", str(run)])
    said = capsys.readouterr().out
    assert "3 irrelevance_unparsed=wrong: an unparseable answer to an irrelevance prompt, now wrong" in said
    strict = json.loads((run / "metrics.json").read_text())
    assert strict["overall"]["exact_match"] == 31 / 150 and strict["evaluation"]["irrelevance_unparsed"] == "wrong"
    main([str(run.parent)])  # the run's own rule (none recorded in its config): the default, BFCL's
    assert "3 irrelevance_unparsed=correct" in capsys.readouterr().out
    assert (run / "predictions.jsonl").read_text() == (ROOT / RUNS / run.name / "predictions.jsonl").read_text()


@pytest.mark.slow
def test_analysis_notebook_executes_against_the_committed_runs():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(STUDY / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(STUDY)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs and not any(o.output_type == "error" for o in outputs)
