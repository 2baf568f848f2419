"""The comparator over synthetic run dirs (no model): rows, intervals, files, failures, reasons, diff, filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from agentcoder.compare.__main__ import main
from agentcoder.compare.diff import diff_runs
from agentcoder.compare.plots import accuracy_rows, plot_accuracy
from agentcoder.compare.runs import FilterError, filter_runs, load_runs, parse_where
from agentcoder.compare.stats import example_terms, mcnemar_exact, paired_difference
from agentcoder.compare.tables import comparison_table, display_table, failures_table, reasons_table, set_notes
from agentcoder.evaluation.metrics import METRICS, wilson_interval
from tests.compare_runs import example_ids, with_accuracy, write_run

ROOT = Path(__file__).resolve().parents[1]
N = 20


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep as the launcher leaves it: seeds of two methods, a failed, a running, a random-init run,
    one run on another example set, one record in today's shape (no resolved config)."""
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "multirun" / "2026-11-26" / "10-00-00.000000"
    job = iter(range(100))

    def d() -> Path:
        return sweep / str(next(job))

    for seed, k in ((1, 4), (2, 6)):
        write_run(d(), method="baseline", seed=seed, correct=with_accuracy(N, k))
    for seed, k in ((1, 10), (2, 12), (3, 14)):  # 50%, 60%, 70%: mean 0.6, std 0.1
        write_run(d(), method="lora", fraction=0.5, seed=seed, correct=with_accuracy(N, k, seed), train_steps=12)
    write_run(d(), method="lora", fraction=1.0, seed=1, correct=with_accuracy(N, 15), shape="old", train_steps=20)
    write_run(d(), method="lora", fraction=0.5, seed=4, status="failed", error="OutOfMemoryError: out of memory")
    write_run(d(), method="lora", fraction=0.5, seed=5, status="running")
    write_run(d(), method="baseline", seed=1, init="random", correct=with_accuracy(N, 0))
    write_run(root / "outputs" / "2026-11-26" / "11-00-00.000000", method="lora", fraction=0.5, seed=1,
              ids=example_ids(10, "other"), correct=with_accuracy(10, 9))
    return root


def _row(table: pd.DataFrame, **where: object) -> pd.Series:
    sel = table
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_table_averages_seeds_and_keeps_everything_else_apart(grid):
    runs = load_runs([grid])
    table = comparison_table(runs)
    lora = _row(table, method="lora", data_fraction=0.5, n=N)
    assert lora["runs"] == 3 and lora["seeds"] == "1,2,3"  # failed seed 4 and running seed 5 are not in
    assert lora["exact_match_mean"] == pytest.approx(0.6)
    assert lora["exact_match_std"] == pytest.approx(0.1)
    assert lora["status"] == "3 ok, 1 failed, 1 running"
    assert lora["train_time_s_mean"] == pytest.approx(50.0)
    # The run on 10 other examples is its own row, and a note says why.
    other = _row(table, method="lora", data_fraction=0.5, n=10)
    assert other["exact_match_mean"] == pytest.approx(0.9) and other["example_set"] != lora["example_set"]
    assert any("different example sets" in note for note in set_notes(table))
    # baseline trains nothing: no fraction; the random-init run is its own, labelled, row.
    base = _row(table, method="baseline", init="pretrained")
    assert pd.isna(base["data_fraction"]) and base["exact_match_mean"] == pytest.approx(0.25)
    assert "smollm2-135m (random-init)" in set(display_table(table)["model"])
    # Today's record shape (choices only) is read too.
    old = _row(table, method="lora", data_fraction=1.0)
    assert old["exact_match_mean"] == pytest.approx(0.75) and old["quant"] == "none"
    assert len(table) == 5


def test_intervals_cover_the_mean_and_have_the_width_of_n(grid):
    table = comparison_table(load_runs([grid]))
    for _, row in table.iterrows():
        for metric in METRICS:
            mean, lo, hi = row[f"{metric}_mean"], row[f"{metric}_lo"], row[f"{metric}_hi"]
            if pd.notna(mean):
                assert lo <= mean + 1e-9 and mean - 1e-9 <= hi, (metric, row["method"])
    # One run, 20 examples, 75% right: the bootstrap agrees with Wilson's interval to a few points.
    old = _row(table, method="lora", data_fraction=1.0)
    w_lo, w_hi = wilson_interval(15, 20)
    assert old["exact_match_lo"] == pytest.approx(w_lo, abs=0.08)
    assert old["exact_match_hi"] == pytest.approx(w_hi, abs=0.08)
    assert 0.3 < old["exact_match_hi"] - old["exact_match_lo"] < 0.5  # n=20 is about +-19 points
    # 0 of 20 right is not a certain 0%: the degenerate bootstrap falls back to Wilson.
    rand = _row(table, init="random")
    assert rand["exact_match_lo"] == 0.0 and rand["exact_match_hi"] == pytest.approx(wilson_interval(0, 20)[1])


def test_example_terms_reproduce_the_run_metrics(grid):
    """The bootstrap resamples the same ratios that metrics.json reports (one definition, two places)."""
    for run in load_runs([grid]):
        if run.row["status"] != "completed":
            continue
        for metric in METRICS:
            terms = example_terms([run.predictions], metric)
            expected = run.row[metric]
            if terms is None:  # rows written before the metric existed: metrics.json lacks it too
                assert expected is None and metric.startswith("argument_"), (metric, run.dir)
            elif expected is None:
                assert terms[1].sum() == 0
            else:
                assert terms[0].sum() / terms[1].sum() == pytest.approx(expected), (metric, run.dir)


def test_failures_and_reasons_tables(grid):
    runs = load_runs([grid])
    failures = failures_table(runs)
    assert sorted(failures["status"]) == ["failed", "running"]
    assert "OutOfMemoryError" in failures.set_index("status").loc["failed", "error"]
    reasons = reasons_table(runs).set_index("method")
    shares = reasons.drop(columns=["runs", "examples"])
    assert shares.sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0])  # every example counted once
    assert reasons.loc["lora", "runs"] == 5 and reasons.loc["lora", "examples"] == 3 * N + N + 10
    assert reasons.loc["lora", "correct"] == pytest.approx((10 + 12 + 14 + 15 + 9) / 90)
    # The synthetic irrelevance examples answered wrongly call a function: the matcher's reason shows.
    assert reasons.loc["baseline", "called_when_none_expected"] > 0
    assert not any(":" in c for c in reasons.columns)  # wrong_value:city is counted as wrong_value


def test_cli_writes_csv_markdown_plots_and_report(grid, tmp_path, capsys):
    out = tmp_path / "cmp"
    main([str(grid), "--out", str(out), "--report", "--resamples", "500"])
    printed = capsys.readouterr().out
    assert "2 runs not in the means" in printed and "OutOfMemoryError" in printed
    csv = pd.read_csv(out / "comparison.csv")
    assert len(csv) == 5 and {"exact_match_mean", "exact_match_std", "exact_match_lo", "exact_match_hi",
                              "seeds", "example_set", "status"} <= set(csv.columns)
    assert len(pd.read_csv(out / "failures.csv")) == 2
    md = (out / "comparison.md").read_text()
    assert "60.0 ±10.0 [" in md and "random-init" in md
    for png in ("accuracy_vs_fraction.png", "efficiency_by_quant.png", "training_curves.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    report = (out / "report.md").read_text()
    assert "- dpo: not yet run" in report and "**grpo**: not yet run" in report
    assert "lora vs baseline, smollm2-135m quant=none, fraction 1" in report
    assert "(accuracy_vs_fraction.png)" in report and "## Not in the means" in report
    # 25% -> 75% on the same 20 examples: a paired interval that excludes 0.
    assert "| smollm2-135m | none | 1 | 25.0 | 75.0 | +50.0 [" in report and "**beyond the interval**" in report


def test_accuracy_plot_leaves_random_init_out(grid, tmp_path):
    table = comparison_table(load_runs([grid]), resamples=200)
    rows, random_only = accuracy_rows(table)
    assert len(rows) == 4 and set(rows["init"]) == {"pretrained"} and not random_only
    # A smoke grid of random-init models only still gets its figure, marked as such.
    rows, random_only = accuracy_rows(table[table["init"] == "random"])
    assert len(rows) == 1 and random_only
    assert plot_accuracy(table[table["init"] == "random"], tmp_path / "a.png").stat().st_size > 10_000


def test_where_filters_by_column_and_config_key(grid, tmp_path, capsys):
    runs = load_runs([grid])
    lora = filter_runs(runs, parse_where(["method=lora", "data_fraction=0.5,1"]))
    assert {r.row["method"] for r in lora} == {"lora"} and len(lora) == 7
    two = filter_runs(runs, parse_where(["method=lora", "seed=1,2"]))
    assert sorted(r.row["seed"] for r in two) == [1, 1, 1, 2]
    assert len(filter_runs(runs, parse_where(["model.init=random"]))) == 1
    # A resolved-config key: every run but the one recorded in today's shape (no config).
    assert len(filter_runs(runs, parse_where(["method.train.lr=0.0001", "quant=none"]))) == 9
    with pytest.raises(FilterError, match="unknown key 'metod'"):
        filter_runs(runs, parse_where(["metod=lora"]))
    with pytest.raises(FilterError, match="KEY=VALUE"):
        parse_where(["method"])
    with pytest.raises(SystemExit) as exc:
        main([str(grid), "--out", str(tmp_path), "--where", "quant=3bit"])
    assert exc.value.code == 2 and "no run dirs" in capsys.readouterr().err


def test_diff_counts_disagreements_and_mcnemar(tmp_path):
    ids = example_ids(20)
    a = write_run(tmp_path / "a", ids=ids, correct=[i < 10 for i in range(20)])
    b = write_run(tmp_path / "b", seed=2, ids=ids + example_ids(1, "extra"),
                  correct=[i < 5 or 10 <= i < 18 for i in range(20)] + [True])
    d = diff_runs(a, b)
    s = d.summary()
    assert (s["both_right"], s["only_a_right"], s["only_b_right"], s["both_wrong"]) == (5, 5, 8, 2)
    assert (d.only_in_a, d.only_in_b) == (0, 1)  # the extra example is not counted
    # Exact McNemar: 5 of 13 discordant pairs; p = 2 * P(Bin(13, 1/2) <= 5) = 2 * 2380 / 8192.
    assert s["mcnemar_p"] == pytest.approx(2 * 2380 / 8192)
    assert mcnemar_exact(0, 0) == 1.0
    text = d.render()
    assert "p = 0.5811" in text and "only B right (8" in text


def test_diff_cli_and_refusal(tmp_path, capsys):
    a = write_run(tmp_path / "a", correct=with_accuracy(6, 3))
    b = write_run(tmp_path / "b", seed=2, correct=with_accuracy(6, 5))
    main(["--diff", str(a), str(b), "--out", str(tmp_path / "o")])
    assert "McNemar" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "o" / "diff.csv")) == 6
    failed = write_run(tmp_path / "f", status="failed")
    with pytest.raises(SystemExit):
        main(["--diff", str(a), str(failed)])
    assert "status failed" in capsys.readouterr().err


def test_paired_difference_is_beyond_the_interval_only_for_a_real_gap():
    ids = [i for i, _ in example_ids(60)]

    def rows(k: int, offset: int = 0) -> list[dict]:
        return [{"id": i, "correct": ok} for i, ok in zip(ids, with_accuracy(60, k, offset), strict=True)]

    big = paired_difference([rows(10)], [rows(40)])
    assert big["diff"] == pytest.approx(0.5) and big["beyond"]
    small = paired_difference([rows(30)], [rows(32, 5)])
    assert small["lo"] < 0 < small["hi"] and not small["beyond"]


def test_broken_and_duplicate_runs_do_not_crash_or_double_count(tmp_path):
    write_run(tmp_path / "r1", correct=with_accuracy(10, 2), config_hash="same", ended_at="2026-11-26T10:00:00")
    write_run(tmp_path / "r2", correct=with_accuracy(10, 8), config_hash="same", ended_at="2026-11-26T11:00:00")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "run.json").write_text('{"status": "compl')
    done = write_run(tmp_path / "nometrics", seed=9)
    (done / "metrics.json").unlink()
    runs = load_runs([tmp_path])
    table = comparison_table(runs)
    assert len(table) == 1 and table.iloc[0]["runs"] == 1 and table.iloc[0]["exact_match_mean"] == 0.8
    statuses = dict(zip(failures_table(runs)["run_dir"].map(lambda p: Path(p).name),
                        failures_table(runs)["status"], strict=True))
    assert statuses == {"r1": "superseded", "torn": "unreadable", "nometrics": "incomplete"}


def test_compare_imports_no_torch(grid, tmp_path):
    # Loading the training stack is what would make comparing slow; neither a comparison nor --help needs it.
    code = ("import sys; from agentcoder.compare.__main__ import main; "
            f"main([{str(grid)!r}, '--out', {str(tmp_path)!r}, '--resamples', '200']); "
            "print('TORCH', 'torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False False" in proc.stdout
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "agentcoder.compare", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert proc.returncode == 0 and "--where" in proc.stdout
    imported = {ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in proc.stderr.splitlines()[1:]
                if ln.startswith("import time:")}
    assert "agentcoder" in imported and not imported & {"torch", "transformers"}, imported & {"torch", "transformers"}


def test_metrics_json_new_shape_is_read(grid):
    """schema_version 1 metrics (method, split, overall, per_category, training) and run.json["config"]."""
    run_dir = next(p.parent for p in grid.rglob("metrics.json") if "schema_version" in json.loads(p.read_text()))
    runs = [r for r in load_runs([grid]) if r.dir == run_dir]
    assert runs[0].row["split"] == "test" and runs[0].config["method.train.lr"] == 1e-4


def test_other_hyperparameters_are_rows_not_seeds_and_baseline_ignores_the_fraction(tmp_path):
    for seed, lr, k in ((1, 1e-4, 5), (2, 1e-4, 7), (1, 1e-3, 9)):
        run = write_run(tmp_path / f"lora-{seed}-{lr}", seed=seed, correct=with_accuracy(10, k))
        rec = json.loads((run / "run.json").read_text())
        rec["config"]["method"]["train"]["lr"] = lr
        rec["config_hash"] += str(lr)
        (run / "run.json").write_text(json.dumps(rec))
    write_run(tmp_path / "base-0.1", method="baseline", fraction=0.1, correct=with_accuracy(10, 1),
              ended_at="2026-11-26T10:00:00")
    write_run(tmp_path / "base-1.0", method="baseline", fraction=1.0, correct=with_accuracy(10, 2),
              ended_at="2026-11-26T11:00:00")
    runs = load_runs([tmp_path])
    table = comparison_table(runs)
    lora = table[table["method"] == "lora"].set_index("variant")
    assert lora.loc["method.train.lr=0.0001", "seeds"] == "1,2"
    assert lora.loc["method.train.lr=0.0001", "exact_match_mean"] == pytest.approx(0.6)
    assert lora.loc["method.train.lr=0.001", "exact_match_mean"] == pytest.approx(0.9)
    assert "variant" in display_table(table).columns
    base = _row(table, method="baseline")
    assert base["runs"] == 1 and base["exact_match_mean"] == pytest.approx(0.2)  # the later run counts once
    dup = failures_table(runs)
    assert list(dup["status"]) == ["duplicate"] and dup.iloc[0]["run_dir"].endswith("base-0.1")


def test_only_failed_runs_still_give_a_table_of_failures(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", status="failed")
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--report"])
    printed = capsys.readouterr().out
    assert "no completed run" in printed and "1 runs not in the means" in printed
    assert "lora vs baseline: not yet run" in (tmp_path / "out" / "report.md").read_text()


def test_run_dirs_are_named_relative_to_the_folder_given(grid, tmp_path):
    runs = load_runs([grid])
    names = {r.name for r in runs}
    assert "outputs/2026-11-26/11-00-00.000000" in names and "multirun/2026-11-26/10-00-00.000000/0" in names
    assert all(r.row["run_dir"] == r.name and not Path(r.name).is_absolute() for r in runs)
    table = comparison_table(runs)
    for dirs in table["run_dirs"]:
        assert all((grid / d / "run.json").is_file() for d in dirs.split(";"))
    # Several folders: named from their common parent, so two jobs "0" of two sweeps stay apart.
    sweep = grid / "multirun" / "2026-11-26" / "10-00-00.000000"
    two = load_runs([sweep / "0", grid / "outputs"])
    assert sorted(r.name for r in two) == ["multirun/2026-11-26/10-00-00.000000/0",
                                           "outputs/2026-11-26/11-00-00.000000"]
    # A run dir given alone is named by its own folder.
    assert [r.name for r in load_runs([sweep / "3"])] == ["3"]
    main([str(sweep), "--out", str(tmp_path), "--no-plots", "--resamples", "200"])
    csv = pd.read_csv(tmp_path / "runs.csv", dtype={"run_dir": str})
    assert sorted(csv["run_dir"]) == sorted(p.name for p in sweep.iterdir())


def test_one_metric_entry_reaches_evaluation_and_the_comparator(tmp_path, monkeypatch):
    """Adding a metric is one entry in metrics.METRICS: metrics.json, the printed table, the comparator's
    kept prediction fields, runs.csv, the comparison table with its interval and the displayed columns."""
    from agentcoder.evaluation.metrics import Metric, compute_metrics, format_table

    metric = Metric("no_extra_args", "no extra", hit=lambda r: r["pred_args"] == r["pred_args_right"],
                    count=lambda r: r["pred_args"] > 0, fields=("pred_args", "pred_args_right"))
    monkeypatch.setitem(METRICS, metric.name, metric)
    run = write_run(tmp_path / "runs" / "a", correct=with_accuracy(N, 12))
    overall = json.loads((run / "metrics.json").read_text())["overall"]
    assert overall["no_extra_args_n"] > 0 and overall["no_extra_args_ci"] is not None
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert compute_metrics(rows)["overall"]["no_extra_args"] == overall["no_extra_args"]
    assert "no extra" in format_table({"overall": overall})

    (loaded,) = load_runs([tmp_path / "runs"])
    assert loaded.row["no_extra_args"] == overall["no_extra_args"]
    table = comparison_table([loaded], resamples=200)
    row = table.iloc[0]
    assert row["no_extra_args_mean"] == pytest.approx(overall["no_extra_args"])
    assert row["no_extra_args_lo"] <= row["no_extra_args_mean"] <= row["no_extra_args_hi"]
    assert "no extra" in display_table(table).columns
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"), "--no-plots", "--resamples", "200"])
    assert "no_extra_args" in pd.read_csv(tmp_path / "cmp" / "runs.csv").columns
    assert "no extra" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_argument_metrics_in_the_comparator_and_missing_for_older_runs(tmp_path):
    """New runs get argument precision/recall with intervals; runs whose predictions predate them show `-`."""
    ids = example_ids(N)
    write_run(tmp_path / "new", ids=ids, correct=with_accuracy(N, 12))
    write_run(tmp_path / "old", method="baseline", ids=ids, correct=with_accuracy(N, 6), shape="old")
    table = comparison_table(load_runs([tmp_path]), resamples=300)
    new, old = _row(table, method="lora"), _row(table, method="baseline")
    for metric in ("argument_precision", "argument_recall"):
        assert new[f"{metric}_lo"] < new[f"{metric}_mean"] <= new[f"{metric}_hi"]
        assert all(pd.isna(old[f"{metric}_{s}"]) for s in ("mean", "lo", "hi"))
    shown = display_table(table).set_index("method")
    assert shown.loc["baseline", "arg prec"] == "-" and shown.loc["lora", "arg prec"].startswith(
        f"{100 * new['argument_precision_mean']:.1f} [")
    # The report's comparisons still pair the two on exact match.
    main([str(tmp_path), "--out", str(tmp_path / "cmp"), "--report", "--no-plots", "--resamples", "300"])
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| smollm2-135m | none | 1 | 30.0 | 60.0 | +30.0 [" in report and "arg rec: argument recall" in report
