"""scripts/gpu_check.py: target/ratio logic, report merging, output parsing, budgets; the CPU smoke (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
assert _spec is not None and _spec.loader is not None
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

def step_record(n: int, gpu: str, finished: str = "2026-11-26T15:00:00Z") -> dict:
    return {"step": n, "mode": "device", "started": finished, "finished": finished, "wall_s": 1.0,
            "budget_s": 10, "env": {"gpu": gpu}, "items": [], "notes": []}


def test_judge_ratio_is_value_over_target_and_met_follows_the_direction() -> None:
    assert gpu_check.judge(60.0, 50.0, ">=") == (1.2, True)
    assert gpu_check.judge(40.0, 50.0, ">=") == (0.8, False)
    assert gpu_check.judge(45.0, 30.0, "<=") == (1.5, False)
    assert gpu_check.judge(6.0, 8.0, "<=") == (0.75, True)
    assert gpu_check.judge(None, 8.0, "<=") == (None, None)
    assert gpu_check.judge(3.0, None, None) == (None, None)


def test_figure_takes_label_target_and_unit_from_targets() -> None:
    f = gpu_check.figure("peak_gb_3b_qlora", 9.2, 3, note="x")
    assert (f["op"], f["target"], f["unit"], f["met"], f["step"]) == ("<=", 8.0, "GB", False, 3)
    assert f["ratio"] == pytest.approx(1.15)
    info = gpu_check.figure("grid_a_exact_match", 0.3, 4, label="grid a")
    assert (info["target"], info["met"], info["label"]) == (None, None, "grid a")


def test_train_rows_accepts_both_json_layouts_of_bench_train() -> None:
    rows = [{"name": "padded", "tokens_per_s": 42.3}, {"name": "project", "tokens_per_s": 54.6}]
    assert gpu_check.train_rows({"results": rows}) == rows == gpu_check.train_rows(rows)
    assert gpu_check.train_rows({}) == []


def test_merge_replaces_a_rerun_step_and_keeps_the_others() -> None:
    r = gpu_check.merge_step(gpu_check.empty_report(), step_record(1, "H100"),
                             [gpu_check.figure("eval_speedup_smollm2", 20.0, 1)])
    r = gpu_check.merge_step(r, step_record(2, "H100"), [gpu_check.figure("real_lora_train_s", 25.0, 2)])
    r = gpu_check.merge_step(r, step_record(1, "H100"), [gpu_check.figure("eval_speedup_smollm2", 55.0, 1),
                                                         gpu_check.figure("train_speedup_3b_none", 3.5, 1)])
    assert [(f["key"], f["value"]) for f in r["figures"]] == [
        ("eval_speedup_smollm2", 55.0), ("train_speedup_3b_none", 3.5), ("real_lora_train_s", 25.0)]
    assert sorted(r["steps"]) == ["1", "2"] and r["same_card"] and r["mode"] == "device"
    r = gpu_check.merge_step(r, step_record(3, "H200"), [])
    assert not r["same_card"]
    # Merging the saved reports gives the same figures (how a restarted machine's pieces are joined).
    again = gpu_check.merge_reports([json.loads(json.dumps(r))])
    assert again["figures"] == r["figures"] and again["steps"].keys() == r["steps"].keys()


def test_markdown_lists_unmeasured_targets_and_ratios(tmp_path: Path) -> None:
    r = gpu_check.merge_step(gpu_check.empty_report(), step_record(1, "NVIDIA H100 80GB HBM3"),
                             [gpu_check.figure("eval_speedup_smollm2", 61.0, 1)])
    gpu_check.write_report(tmp_path, r)
    md = (tmp_path / gpu_check.REPORT_MD).read_text()
    assert "| 61.0 x | >= 50.0 x | 1.22 | yes | 1 |" in md
    assert "real SmolLM2 + LoRA, full test split: eval time | not measured yet | <= 5 s" in md
    assert json.loads((tmp_path / gpu_check.REPORT_JSON).read_text())["figures"][0]["met"] is True


def test_step_budget_skips_what_does_not_fit_and_stops_what_overruns(tmp_path: Path) -> None:
    run = gpu_check.StepRun(1, tmp_path, budget_s=2.0, smoke=True, env=dict(os.environ))
    assert run.run("too-big", [sys.executable, "-c", "print(1)"], estimate_s=60) is None
    status, _ = run.run("sleeper", [sys.executable, "-c", "import time; print('go', flush=True); time.sleep(30)"],
                        estimate_s=0)
    assert status == "timeout"
    assert run.run("late", [sys.executable, "-c", "print('hi')"], estimate_s=5) is None
    assert [i["status"] for i in run.items] == ["skipped", "timeout", "skipped"]
    assert "go" in (tmp_path / "logs" / "step1-sleeper.log").read_text()
    assert run.items[1]["seconds"] < 10


def test_join_gguf_checks_the_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    root = tmp_path / "repo"
    (root / ".model-b").mkdir(parents=True)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "part-aa").write_bytes(b"half A|")
    (root / ".model-b" / "part-ab").write_bytes(b"half B")
    monkeypatch.setattr(gpu_check, "ROOT", root)
    good = hashlib.sha256(b"half A|half B").hexdigest()
    with pytest.raises(RuntimeError, match="sha256"):
        gpu_check.join_gguf(tmp_path / "m", "0" * 64)
    assert not (tmp_path / "m" / gpu_check.GGUF_NAME).exists()
    assert gpu_check.join_gguf(tmp_path / "m", good).read_bytes() == b"half A|half B"
    (tmp_path / "m" / "part-aa").unlink()  # a re-run of step 2 reuses the joined file
    assert gpu_check.join_gguf(tmp_path / "m", good).is_file()


def test_cache_inside_the_kit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="inside"):
        gpu_check.seed_cache(tmp_path / "kit", tmp_path / "kit" / "cache")


def test_without_a_kit_the_runs_use_the_projects_own_model_and_cache(tmp_path: Path, monkeypatch) -> None:
    """A GPU machine with network: no GGUF halves, no offline switch, the project's cache."""
    import argparse

    monkeypatch.delenv("AGENTCODER_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    user = argparse.Namespace(offline_kit=False, model_dir=tmp_path / "m")
    assert "model.gguf_path" not in gpu_check._real_overrides(user, False, method="lora")
    env = gpu_check.child_env(None, offline=False)
    assert "AGENTCODER_CACHE" not in env and "HF_HUB_OFFLINE" not in env
    kit = argparse.Namespace(offline_kit=True, model_dir=tmp_path / "m")
    assert gpu_check._real_overrides(kit, False)["model.gguf_path"] == tmp_path / "m" / gpu_check.GGUF_NAME
    assert gpu_check.child_env(tmp_path, offline=True)["HF_HUB_OFFLINE"] == "1"


@pytest.mark.slow
def test_cpu_smoke_runs_every_step(tmp_path: Path) -> None:
    """The device sequence at tiny scale, offline (~10 min on the shared 2-core CPU). AGENTCODER_CACHE_SMOKE
    names a cache to reuse (it keeps the ~0.5 GB conversion of the joined GGUF); else a fresh one."""
    needed = [ROOT / ".gpu-kit" / "tokenizer", ROOT / ".model-a" / "part-aa", ROOT / ".model-b" / "part-ab"]
    missing = [str(p.relative_to(ROOT)) for p in needed if not p.exists()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: the offline kit of docs/gpu.md")
    env = {**os.environ, "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1",
           "AGENTCODER_CACHE": os.environ.get("AGENTCODER_CACHE_SMOKE", str(tmp_path / "cache"))}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(out),
                           "--model-dir", str(tmp_path / "m"), "--export", str(tmp_path / "export")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / gpu_check.REPORT_JSON).read_text())
    assert report["mode"] == "cpu-smoke" and sorted(report["steps"]) == ["1", "2", "3", "4"]
    statuses = {i["name"]: i["status"] for s in report["steps"].values() for i in s["items"]}
    assert all(v == "ok" for v in statuses.values()), statuses
    keys = {f["key"] for f in report["figures"] if f["value"] is not None}
    assert set(gpu_check.TARGETS) <= keys, set(gpu_check.TARGETS) - keys
    assert {"real_lora_exact_match", "grid_baseline-none_exact_match"} <= keys
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        *(f"gpu_check_step{n}.tar.gz" for n in (1, 2, 3, 4)), gpu_check.REPORT_JSON, gpu_check.REPORT_MD]
