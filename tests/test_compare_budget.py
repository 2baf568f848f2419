"""The report's "At equal compute" section and accuracy_vs_compute.png, on synthetic run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from agentcoder.compare.__main__ import main as compare
from tests.compare_runs import example_ids, with_accuracy, write_run


def _staged(run_dir: Path, *, init: str | None = None, stage_s: float | None = 300.0,
            sampling_s: float | None = None) -> None:
    """Make a written run one that started from an SFT stage (and, with INIT, a lora arm; with
    SAMPLING_S, a dpo run that timed the sampling of its pairs)."""
    record = json.loads((run_dir / "run.json").read_text())
    if init:
        record["config"]["method"]["init"] = init
    if sampling_s is not None:
        record["pairs"] = {"n_pairs": 10, "sample_time_s": sampling_s}
    record["stage"] = {"key": "k", "sft_adapter": "a", "sft_run_dir": "s", "trained_here": False,
                       **({"train_time_s": stage_s} if stage_s is not None else {})}
    (run_dir / "run.json").write_text(json.dumps(record))


def test_each_arm_is_paired_with_the_continued_sft_arm_and_plotted_against_compute(tmp_path):
    ids = example_ids(60)
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_run(root / f"lora-{seed}", method="lora", seed=seed, correct=with_accuracy(60, 20), ids=ids)
        _staged(write_run(root / f"cont-{seed}", method="lora", seed=seed, correct=with_accuracy(60, 22), ids=ids,
                          config_hash=f"cont{seed}"), init="sft")
        _staged(write_run(root / f"dpo-{seed}", method="dpo", seed=seed, correct=with_accuracy(60, 30), ids=ids),
                sampling_s=60.0)
    out = tmp_path / "cmp"
    compare([str(root), "--out", str(out), "--report", "--resamples", "300"])
    report = (out / "report.md").read_text()
    section = report.split("## At equal compute", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| dpo"))
    # continued SFT 22/60 in 100 s own + 300 s stage; dpo 30/60 in the same plus 60 s sampling its
    # pairs (compute spent on its data): +13.3 points
    assert "| 36.7 (7) | 50.0 (8) | +13.3 [" in row, row
    assert "dpo vs continued SFT at equal compute (8 vs 7 min)" in report
    assert (out / "accuracy_vs_compute.png").is_file()


def test_a_stage_of_unknown_training_time_leaves_the_arm_off_the_compute_axis(tmp_path):
    ids = example_ids(30)
    root = tmp_path / "runs"
    write_run(root / "lora", method="lora", correct=with_accuracy(30, 10), ids=ids)
    _staged(write_run(root / "dpo", method="dpo", correct=with_accuracy(30, 12), ids=ids), stage_s=None)
    out = tmp_path / "cmp"
    compare([str(root), "--out", str(out), "--report", "--resamples", "200"])
    assert not (out / "accuracy_vs_compute.png").exists()  # no staged run with a known total
    assert "_not yet run: needs dpo/grpo/ppo and a continued-SFT arm" in (out / "report.md").read_text()


def test_a_dpo_run_that_did_not_time_its_sampling_has_no_known_compute(tmp_path):
    ids = example_ids(30)
    root = tmp_path / "runs"
    write_run(root / "lora", method="lora", correct=with_accuracy(30, 9), ids=ids)
    _staged(write_run(root / "cont", method="lora", correct=with_accuracy(30, 10), ids=ids, config_hash="cont"),
            init="sft")
    _staged(write_run(root / "dpo", method="dpo", correct=with_accuracy(30, 12), ids=ids))  # no sample_time_s
    out = tmp_path / "cmp"
    compare([str(root), "--out", str(out), "--report", "--resamples", "200"])
    section = (out / "report.md").read_text().split("## At equal compute", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| dpo"))
    assert "| 33.3 (7) | 40.0 (?) |" in row, row  # said to be unknown, not counted as the train time alone


def test_the_compute_plot_names_each_arm_by_method_and_start_not_by_its_overrides(tmp_path):
    import warnings

    import pandas as pd

    from agentcoder.compare.budget import short_arm, start_label

    long_sft = "method.init=sft method.train.epochs=3.0 method.train.lr=$\\{sft_train.lr\\} method.train.max_steps=100"
    assert short_arm(pd.Series({"method": "lora", "variant": long_sft})) == "lora, continued SFT"
    assert short_arm(pd.Series({"method": "grpo", "variant": "method.init=base method.train.max_steps=70"})) \
        == "grpo from base"
    assert short_arm(pd.Series({"method": "lora", "variant": "method.init=base method.train.epochs=1.04"})) == "lora"
    # The training curves' legends (a panel per method) name the start the same way.
    assert start_label({"method": "lora", "variant": long_sft}) == "continued SFT"
    assert start_label({"method": "grpo", "variant": "method.init=sft method.train.max_steps=12"}) \
        == "from the SFT stage"
    assert start_label({"method": "lora", "variant": "method.lora.r=16"}) == "method.lora.r=16"
    # Arms whose variants run to a hundred characters still leave the plot room for its axes.
    ids = example_ids(30)
    root = tmp_path / "runs"
    # With train logs, so the training curves' legends are drawn too.
    write_run(root / "lora", method="lora", correct=with_accuracy(30, 9), ids=ids, train_steps=10)
    cont = write_run(root / "cont", method="lora", correct=with_accuracy(30, 10), ids=ids, config_hash="cont",
                     train_steps=10)
    _staged(cont, init="sft")
    record = json.loads((cont / "run.json").read_text())
    record["config"]["method"]["train"] = {"lr": "${sft_train.lr}", "max_steps": 100, "val_limit": 40,
                                           "evaluations": 2, "epochs": 3.0, "scheduler": "cosine-with-restarts"}
    (cont / "run.json").write_text(json.dumps(record))
    _staged(write_run(root / "dpo", method="dpo", correct=with_accuracy(30, 12), ids=ids), sampling_s=30.0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compare([str(root), "--out", str(tmp_path / "cmp"), "--report", "--resamples", "200"])
    assert (tmp_path / "cmp" / "accuracy_vs_compute.png").is_file()
    assert (tmp_path / "cmp" / "training_curves.png").is_file()
    assert not [str(w.message) for w in seen if "layout" in str(w.message)]


def test_rl_from_base_is_paired_with_the_same_method_from_the_stage_when_their_budgets_differ(tmp_path):
    # The ToolRL question at equal compute: grpo from base runs for the stage's time as well, so it has
    # more steps than grpo from the stage, and their variants differ in more than the start.
    ids = example_ids(30)
    root = tmp_path / "runs"
    write_run(root / "lora", method="lora", correct=with_accuracy(30, 9), ids=ids)
    for init, steps, right in (("sft", 12, 12), ("base", 50, 6)):
        run = write_run(root / init, method="grpo", correct=with_accuracy(30, right), ids=ids, config_hash=init)
        record = json.loads((run / "run.json").read_text())
        record["config"]["method"].update(init=init, train={"lr": 1e-4, "max_steps": steps})
        (run / "run.json").write_text(json.dumps(record))
        if init == "sft":
            _staged(run)
    out = tmp_path / "cmp"
    compare([str(root), "--out", str(out), "--report", "--resamples", "200"])
    section = (out / "report.md").read_text().split("## Does RL need the SFT stage first?", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| grpo"))
    assert "| 40.0 (7) | 20.0 (2) |" in row, row  # exact match (minutes of training, the stage's included)
    # Their failures are counted apart: pooled, the reasons table would show neither start's.
    reasons = pd.read_csv(out / "reasons.csv").set_index("method")
    grpo = {m: r["correct"] for m, r in reasons.iterrows() if m.startswith("grpo")}
    assert sorted(grpo.values()) == [0.2, 0.4] and all("method.init=" in m for m in grpo), grpo
