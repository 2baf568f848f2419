"""The committed CPU study (docs/results/cpu_study/) regenerates from its committed run files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.studies import assert_regenerates, execute_notebook

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "results" / "cpu_study"
RUNS = "docs/results/cpu_study/runs"


def test_compare_reproduces_the_committed_tables_and_report(tmp_path):
    import pandas as pd

    assert_regenerates(STUDY, tmp_path)
    table = pd.read_csv(STUDY / "comparison.csv")
    # The study's design: every method, both seeds, all on the same 150 test examples.
    assert set(table["method"]) == {"baseline", "lora", "dpo", "grpo", "ppo"}
    assert (table["n"] == 150).all() and table["example_set"].nunique() == 1
    assert (table.loc[table["method"] != "baseline", "runs"] == 2).all()
    runs = pd.read_csv(STUDY / "runs.csv")
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
    execute_notebook(STUDY / "analysis.ipynb")
