"""The tuned study (docs/results/tuned_study/): its overlay runs the settings its committed search
found on val, and its runs are collected under the names the comparator's reader expects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from agentcoder.compare.search import load_searches
from agentcoder.files import RUN_FILE, read_json
from agentcoder.preflight import compose_config
from scripts.collect_runs import collect_runs, run_name

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "results" / "tuned_study"


def test_the_overlay_runs_the_best_settings_of_the_committed_search():
    (search,) = load_searches([STUDY / "search"])
    assert search.best is not None and set(search.best["params"]) == set(search.params)
    # Found on val, never test: every trial's objective is its val split.
    trials = [json.loads(p.read_text()) for p in (STUDY / "search").glob("*/run.json")]
    assert trials and all(t["objective"]["split"] == "val" for t in trials if t.get("objective"))
    for method in ("lora", "dpo", "grpo", "ppo"):
        cfg = compose_config(["experiment=tuned_study", f"method={method}"])
        for key, value in search.best["params"].items():
            assert OmegaConf.select(cfg, key) == value, (method, key)
        assert cfg.data_fraction == 1.0


def test_runs_are_collected_by_method_init_fraction_and_seed(tmp_path):
    # The CPU study's committed runs carry the names the collector gives them.
    runs = sorted((ROOT / "docs" / "results" / "cpu_study" / "runs").glob("*/run.json"))
    assert runs and all(run_name(json.loads(p.read_text())) == p.parent.name for p in runs)
    record = json.loads(runs[0].read_text())
    record["config"]["method"].update(name="lora", init="sft")
    record["config"].update(data_fraction=1.0, seed=2)
    assert run_name(record) == "lora-continued-f1.0-seed2"
    # Only completed runs, and only their small files.
    sweep = tmp_path / "sweep"
    for i, (status, extra) in enumerate((("completed", "adapter/x.bin"), ("failed", None))):
        (sweep / str(i)).mkdir(parents=True)
        (sweep / str(i) / "run.json").write_text(json.dumps({**record, "status": status}))
        if extra:
            (sweep / str(i) / extra).parent.mkdir()
            (sweep / str(i) / extra).write_text("weights")
    collect_runs(sweep, tmp_path / "runs")
    (kept,) = (tmp_path / "runs").iterdir()
    assert kept.name == "lora-continued-f1.0-seed2" and [p.name for p in kept.iterdir()] == ["run.json"]


def test_compare_reproduces_the_committed_tables_and_report(tmp_path):
    """The study's committed runs (docs/results/tuned_study/runs) regenerate its tables and report,
    all on the CPU study's 150 test examples, so the two studies compare example by example."""
    import pandas as pd

    from tests.studies import assert_regenerates

    assert_regenerates(STUDY, tmp_path)
    table = pd.read_csv(STUDY / "comparison.csv")
    cpu = pd.read_csv(ROOT / "docs" / "results" / "cpu_study" / "comparison.csv")
    assert (table["n"] == 150).all() and set(table["example_set"]) == set(cpu["example_set"])
    assert {"baseline", "lora"} <= set(table["method"])
    assert "## At equal compute" in (STUDY / "report.md").read_text()


def test_the_committed_runs_are_the_designed_study():
    """Three seeds of the tuned stage; from each of at least two of them, the four arms at one budget
    (each arm's own training time, dpo's sampling included, within 25% of the continued SFT's of the
    same seed), each started from that seed's stage; and grpo from the base model, trained at least as
    long as a stage and an arm (within the same 25%)."""
    records = {p.parent.name: read_json(p) for p in (STUDY / "runs").glob(f"*/{RUN_FILE}")}
    assert all(r["status"] == "completed" for r in records.values())
    seeds = lambda prefix: {r["config"]["seed"] for n, r in records.items() if n.startswith(prefix)}  # noqa: E731
    assert seeds("lora-f1.0-seed") == {1, 2, 3}
    arm_seeds = seeds("lora-continued-")
    assert len(arm_seeds) >= 2 and all(seeds(f"{m}-f1.0-") >= arm_seeds for m in ("dpo", "grpo", "ppo"))
    stages = {r["config"]["seed"]: r for n, r in records.items() if n.startswith("lora-f1.0-")}
    for seed in arm_seeds:
        arms = {m: records[f"{m}-f1.0-seed{seed}"] for m in ("dpo", "grpo", "ppo")}
        arms["continued"] = records[f"lora-continued-f1.0-seed{seed}"]
        own = {a: r["train"]["train_time_s"] + ((r.get("pairs") or {}).get("sample_time_s") or 0)
               for a, r in arms.items()}
        for method, seconds in own.items():
            assert abs(seconds / own["continued"] - 1) <= 0.25, (seed, method, seconds, own["continued"])
            # Each arm's stage is its seed's tuned stage, whose time the comparator adds to the arm's.
            assert arms[method]["stage"]["train_time_s"] == stages[seed]["train"]["train_time_s"]
    # The ToolRL question: grpo from the base model, with no less than its seed's stage plus an arm.
    (from_base,) = [r for n, r in records.items() if n.startswith("grpo-from-base-")]
    seed = from_base["config"]["seed"]
    budget = stages[seed]["train"]["train_time_s"] + records[f"lora-continued-f1.0-seed{seed}"]["train"]["train_time_s"]
    assert from_base["config"]["method"]["init"] == "base" and "stage" not in from_base
    assert from_base["train"]["train_time_s"] >= 0.75 * budget, (from_base["train"]["train_time_s"], budget)


@pytest.mark.slow
def test_analysis_notebook_executes_against_the_committed_runs():
    from tests.studies import execute_notebook

    execute_notebook(STUDY / "analysis.ipynb")
