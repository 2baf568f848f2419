"""The entrypoint as a user meets it: composition, early errors, run records, sweeps and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What makes a launch slow to answer: the training stack. Config errors and --help must not load it.
ML_STACK = {"torch", "transformers", "datasets", "peft", "trl", "accelerate", "bitsandbytes"}


def launch(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 120):
    """`python -m agentcoder.run ARGS`; proc.imported holds the top-level packages it imported."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agentcoder.run", *args],
        cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    # -X importtime writes one "import time: ... | package" line per import to stderr; keep them apart.
    stderr = proc.stderr.splitlines(keepends=True)
    timings = [ln for ln in stderr if ln.startswith("import time:")]
    proc.stderr = "".join(ln for ln in stderr if not ln.startswith("import time:"))
    proc.imported = {ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in timings[1:]}
    return proc


def test_cfg_job_composes_groups():
    proc = launch("method=dpo", "quant=4bit", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: dpo" in proc.stdout and "beta:" in proc.stdout
    assert "load_in_4bit: true" in proc.stdout and "bnb_4bit_quant_type: nf4" in proc.stdout


def test_experiment_overlay_takes_both_spellings():
    for spelling in ("experiment=quick", "+experiment=quick"):
        proc = launch(spelling, "--cfg", "job")
        assert proc.returncode == 0, proc.stderr
        assert "limit: 8" in proc.stdout and "max_new_tokens: 64" in proc.stdout


def test_lora_hyperparameters_show_in_cfg_job():
    proc = launch("method=lora", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    for text in ("r: 16", "alpha: 32", "lr: 0.0001", "epochs: 3"):
        assert text in proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["quant=3bit"], ["quant=3bit", "4bit, 8bit, none"]),
        (["data_fraction=1.5"], ["data_fraction=1.5", "(0, 1]"]),
        (["data_fraction=0"], ["data_fraction=0", "(0, 1]"]),
        (["method=lora", "method.lora.r=-4"], ["method.lora.r=-4", "positive"]),
        (["foo=1"], ["unknown config key 'foo'"]),
        (["method=lora", "method.lora.rank=8"], ["unknown config key 'method.lora.rank'"]),
        (["method=nope"], ["method=nope", "baseline", "lora"]),
        (["-m", "data_fraction=0.1,1.5"], ["data_fraction=1.5"]),
        (["eval.batch_size=0"], ["eval.batch_size"]),
        (["eval.parallel_matching=best"], ["eval.parallel_matching=best", "optimal, greedy"]),
        (["eval.token_budget=0"], ["eval.token_budget=0", "positive int or auto"]),
        (["method=lora", "method.train.packing=true"], ["method.train.packing", "auto, rows, flat, none"]),
        (["method=lora", "method.train.gradient_checkpointing=sometimes"],
         ["method.train.gradient_checkpointing=sometimes", "auto, true, false"]),
    ],
)
def test_bad_values_fail_early_with_one_line(args, expected):
    proc = launch(*args)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0]
    assert "agentcoder" in proc.imported and not proc.imported & ML_STACK, proc.imported & ML_STACK


def test_config_errors_do_not_import_torch():
    code = (
        "import sys; sys.argv = ['agentcoder.run', 'quant=3bit']\n"
        "import agentcoder.run as r\n"
        "try:\n    r.main()\nexcept SystemExit as e:\n    assert e.code == 2\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False False", out.stderr


def test_help_answers_without_the_ml_stack():
    proc = launch("--help")
    assert proc.returncode == 0
    assert "method" in proc.stdout
    assert "hydra" in proc.imported and not proc.imported & ML_STACK, proc.imported & ML_STACK


def test_run_record_has_provenance_and_no_secret(tmp_path):
    secret = "hf_SeCrEt0123456789"
    run_dir = tmp_path / "run"
    proc = launch("method=debug", "method.value=3", "seed=7", f"hydra.run.dir={run_dir}", env={"HF_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["seeds"]["seed"] == 7
    assert len(record["git"]["commit"]) == 40 and isinstance(record["git"]["dirty"], bool)
    assert record["versions"]["torch"] and record["versions"]["transformers"] and record["versions"]["python"]
    assert record["hardware"]["cpu_count"] >= 1 and record["hardware"]["ram_bytes"] > 0
    assert record["choices"]["method"] == "debug"
    assert "method.value=3" in record["overrides"]
    assert record["command"][:3] == ["python", "-m", "agentcoder.run"] and "seed=7" in record["command"]
    assert record["ended_at"] and record["duration_s"] >= 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["overall"]["value"] == 3
    assert (run_dir / ".hydra" / "config.yaml").exists()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="ignore"), path


def test_two_runs_in_the_same_second_do_not_collide(tmp_path):
    cmd = [sys.executable, "-m", "agentcoder.run", "method=debug"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    runs = list((tmp_path / "outputs").glob("*/*/run.json"))
    assert len(runs) == 2


def test_run_dirs_are_claimed_so_one_clock_tick_cannot_give_two_runs_one_dir(tmp_path):
    from datetime import datetime

    from agentcoder.tracking.callbacks import new_dir

    tick = datetime(2026, 11, 26, 17, 49, 45, 798360)  # a coarse clock gives both runs this instant
    first, second = (new_dir(str(tmp_path / "outputs"), now=tick) for _ in range(2))
    assert first != second
    assert Path(first).name == "17-49-45.798360" and Path(second).name == "17-49-45.798360-2"
    assert Path(first).is_dir() and Path(second).is_dir()


def test_default_sweep_dir_counts_each_job_once(tmp_path):
    proc = launch("-m", "method=debug", "seed=1,2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 completed, 0 failed, 0 skipped" in proc.stdout, proc.stdout
    assert len(list((tmp_path / "multirun").glob("*/*/*/run.json"))) == 2
    assert not (tmp_path / "outputs").exists()  # a sweep claims no single-run dir


def test_failed_run_leaves_traceback_and_failed_status(tmp_path):
    run_dir = tmp_path / "run"
    proc = launch("method=debug", "method.fail=true", f"hydra.run.dir={run_dir}")
    assert proc.returncode != 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and "DebugFailure" in record["error"]
    assert "Traceback" in (run_dir / "error.txt").read_text()


def _statuses(sweep: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/run.json")}


def test_sweep_survives_failures_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "method=debug", "method.fail=false,true", "method.value=1,2", f"hydra.sweep.dir={sweep}"]
    first = launch(*args)
    assert first.returncode == 1  # some job failed
    statuses = _statuses(sweep)
    assert sorted(statuses.values()) == ["completed", "completed", "failed", "failed"]
    for job, status in statuses.items():
        if status == "failed":
            assert "failing on purpose" in (sweep / job / "error.txt").read_text()
        else:
            assert (sweep / job / "metrics.json").exists()
    assert "2 completed, 2 failed, 0 skipped" in first.stdout

    second = launch(*args)
    assert "0 completed, 2 failed, 2 skipped" in second.stdout
    assert _statuses(sweep) == statuses

    forced = launch(*args, "resume=false")
    assert "2 completed, 2 failed, 0 skipped" in forced.stdout
    attempts = [json.loads(p.read_text())["attempt"] for p in sweep.glob("*/run.json")]
    assert sorted(attempts) == [2, 2, 3, 3]


def test_changed_config_in_same_sweep_dir_reruns(tmp_path):
    sweep = tmp_path / "sweep"
    assert launch("-m", "method=debug", "method.value=1", f"hydra.sweep.dir={sweep}").returncode == 0
    again = launch("-m", "method=debug", "method.value=5", f"hydra.sweep.dir={sweep}")
    assert "1 completed, 0 failed, 0 skipped" in again.stdout
    # The completed run of the other config keeps its dir; the new config gets the next one.
    assert json.loads((sweep / "0" / "metrics.json").read_text())["overall"]["value"] == 1
    assert json.loads((sweep / "1" / "metrics.json").read_text())["overall"]["value"] == 5


def test_the_launchers_self_test_never_imports_torch(tmp_path):
    # method=debug is what the launcher tests sweep: each of its jobs must start without the ML stack.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "agentcoder.run", "method=debug",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "agentcoder.tracking.records" in imported and not {"torch", "transformers"} & imported
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"
