"""Grid overlays and the comparator over real sweeps of the launcher (subprocesses into tmp_path)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from agentcoder.assets import sha256_file
from agentcoder.compare.__main__ import main as compare
from tests.helpers import compose_cfg
from tests.test_data_loading import build_wheel
from tests.test_launcher import launch

ROOT = Path(__file__).resolve().parents[1]


def _sweep_params(experiment: str) -> dict[str, list[str]]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


@pytest.mark.parametrize("experiment", ["grid", "grid_smoke"])
def test_every_job_of_a_grid_overlay_composes(experiment):
    params = _sweep_params(experiment)
    assert set(params) == {"method", "quant", "data_fraction"} and len(params["data_fraction"]) == 3
    assert params["quant"] == ["none", "8bit", "4bit"] and {"baseline", "lora"} <= set(params["method"])
    for values in itertools.product(*params.values()):
        overrides = [f"{k}={v}" for k, v in zip(params, values, strict=True)]
        cfg = compose_cfg(f"experiment={experiment}", *overrides)
        assert cfg.method.name == dict(zip(params, values, strict=True))["method"]
    if experiment == "grid_smoke":
        assert cfg.model.init == "random" and cfg.eval.limit <= 8


def test_grid_expands_and_compare_lists_its_failures(tmp_path):
    """The overlay's sweeper params expand in a real sweep (method=debug on the command line replaces its
    method list, so nothing loads a model). debug, like baseline, trains nothing: its data_fraction
    changes nothing, so each quant runs once and its other two fractions skip as done. The
    comparator reads those runs plus a failing one."""
    sweep = tmp_path / "sweep"
    proc = launch("-m", "experiment=grid", "method=debug", f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("#8 : ") == 1  # Hydra launched all nine jobs
    assert "3 completed, 0 failed, 6 skipped" in proc.stdout, proc.stdout
    assert len(list(sweep.glob("*/run.json"))) == 3
    failing = launch("-m", "method=debug", "method.fail=true", f"hydra.sweep.dir={tmp_path / 'bad'}")
    assert failing.returncode == 1
    compare([str(tmp_path), "--out", str(tmp_path / "cmp"), "--no-plots"])
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    done = runs[runs["status"] == "completed"]
    assert sorted(done["quant"]) == ["4bit", "8bit", "none"]
    failures = pd.read_csv(tmp_path / "cmp" / "failures.csv")
    assert list(failures["status"]) == ["failed"] and "failing on purpose" in failures.iloc[0]["error"]


def test_data_fraction_is_part_of_the_config_hash_only_for_a_method_that_trains():
    from agentcoder.checks import validate
    from agentcoder.config import config_hash

    def key(*overrides: str) -> str:
        return config_hash(validate(compose_cfg(*overrides)))

    assert key("method=baseline", "data_fraction=0.1") == key("method=baseline", "data_fraction=1.0")
    assert key("method=baseline", "quant=4bit") != key("method=baseline")
    for method in ("lora", "dpo", "grpo", "ppo"):
        assert key(f"method={method}", "data_fraction=0.1") != key(f"method={method}", "data_fraction=1.0")


@pytest.mark.slow
def test_real_sweep_on_a_tiny_model_then_compare(tiny_model_dir, tmp_path):
    """baseline and lora (2 seeds) through the launcher, then the comparator (failed jobs: the grid test)."""
    cache = tmp_path / "cache"
    sha = sha256_file(build_wheel(cache, {"simple_python": 12, "live_parallel": 8, "irrelevance": 8}))
    sweep = tmp_path / "multirun"
    proc = launch(
        "-m", "method=baseline,lora", "seed=1,2", "model.source=hub", f"model.hub_id={tiny_model_dir}",
        "data.categories=[simple_python,live_parallel,irrelevance]", f"data.embedded.sha256={sha}",
        f"cache_dir={cache}", "eval.limit=4", "eval.max_new_tokens=8", "eval.batch_size=4",
        f"hydra.sweep.dir={sweep}", timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 completed, 0 failed" in proc.stdout
    out = tmp_path / "cmp"
    compare([str(sweep), "--out", str(out), "--report", "--resamples", "300"])
    table = pd.read_csv(out / "comparison.csv").set_index("method")
    assert table.loc["lora", "runs"] == 2 and table.loc["lora", "seeds"] == "1,2"
    # eval.limit=4 caps a test split of 3 examples; both methods saw the same ones.
    assert table.loc["baseline", "n"] == table.loc["lora", "n"] == 3
    assert table.loc["baseline", "example_set"] == table.loc["lora", "example_set"]
    for method in ("baseline", "lora"):
        lo, hi = table.loc[method, "exact_match_lo"], table.loc[method, "exact_match_hi"]
        assert 0 <= lo <= table.loc[method, "exact_match_mean"] <= hi <= 1 and hi - lo > 0.2  # n=3: wide
    for png in ("accuracy_vs_fraction.png", "efficiency_by_quant.png", "training_curves.png"):
        assert (out / png).stat().st_size > 10_000
    assert "not yet run" in (out / "report.md").read_text()
    # Run dirs are named relative to the folder compared.
    pair = [str(sweep / table.loc[m, "run_dirs"].split(";")[0]) for m in ("baseline", "lora")]
    diff = subprocess.run([sys.executable, "-m", "agentcoder.compare", "--diff", *pair, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert diff.returncode == 0 and "McNemar" in diff.stdout, diff.stderr
