"""The comparator reads what it can and names what it cannot: non-finite values, unknown schema
versions, torn or absurdly nested lines, and an --out it cannot write (one line, nothing half-written)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentcoder.compare.runs import load_run, load_runs

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "results" / "cpu_study" / "runs"


def _copy(tmp_path: Path, name: str, as_name: str | None = None, seed: int | None = None) -> Path:
    dst = tmp_path / "runs" / (as_name or name)
    shutil.copytree(STUDY / name, dst)
    if seed is not None:  # another seed: a run of its own, not a re-run of the same config
        rec = json.loads((dst / "run.json").read_text())
        rec["config"]["seed"], rec["config_hash"] = seed, f"hash-{seed}"
        (dst / "run.json").write_text(json.dumps(rec))
    return dst


def _edit_metrics(run: Path, **overall: object) -> None:
    m = json.loads((run / "metrics.json").read_text())
    m["overall"].update(overall)
    (run / "metrics.json").write_text(json.dumps(m))  # json writes NaN/Infinity as a hand edit would


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentcoder.compare", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_non_finite_and_unknown_versions_are_left_out_with_the_reason(tmp_path):
    _copy(tmp_path, "baseline-seed1")
    _edit_metrics(_copy(tmp_path, "baseline-seed1", "nan", seed=7), exact_match=float("nan"))
    _edit_metrics(_copy(tmp_path, "baseline-seed1", "inf", seed=8), function_selection=float("inf"))
    v99 = _copy(tmp_path, "baseline-seed1", "v99", seed=9)
    m = json.loads((v99 / "metrics.json").read_text())
    m["schema_version"], m["overall"]["exact_match"] = 99, 25.0
    (v99 / "metrics.json").write_text(json.dumps(m))
    rows = {r.name: r.row for r in load_runs([tmp_path / "runs"])}
    assert rows["baseline-seed1"]["status"] == "completed"
    assert (rows["nan"]["status"], rows["nan"]["error"]) == ("left out", "non-finite exact_match")
    assert rows["inf"]["error"] == "non-finite function_selection"
    assert rows["v99"]["status"] == "left out" and rows["v99"]["error"].startswith("schema_version 99")


def test_a_nan_seed_is_left_out_not_read_as_seed_nan(tmp_path):
    run = _copy(tmp_path, "baseline-seed1")
    rec = json.loads((run / "run.json").read_text())
    rec["config"]["seed"] = float("nan")
    (run / "run.json").write_text(json.dumps(rec))
    row = load_run(run).row
    assert row["status"] == "left out" and "seed" in row["error"]


def test_torn_and_deeply_nested_lines_are_counted_and_nothing_raises(tmp_path):
    run = _copy(tmp_path, "lora-f1.0-seed1")
    n = len((run / "predictions.jsonl").read_text().splitlines())
    with (run / "predictions.jsonl").open("a") as fh:
        fh.write('{"id": "torn", "categ\n' + "[" * 5000 + "\n")
    for name in ("train_log.jsonl", "run.json"):
        with (run / name).open("a") as fh:
            fh.write("[" * 5000 + "\n")
    row = load_run(run).row  # run.json is now not JSON: unreadable, named
    assert row["status"] == "unreadable"
    shutil.rmtree(run)
    run = _copy(tmp_path, "lora-f1.0-seed1")
    with (run / "predictions.jsonl").open("a") as fh:
        fh.write('{"id": "torn", "categ\n' + "[" * 5000 + "\n")
    with (run / "train_log.jsonl").open("a") as fh:
        fh.write("[" * 5000 + "\n")
    loaded = load_run(run)
    assert loaded.row["torn_lines"] == 2 and len(loaded.predictions) == n
    out = tmp_path / "out"
    proc = compare(str(tmp_path / "runs"), "--out", str(out), "--report")
    assert proc.returncode == 0, proc.stderr
    assert "lora-f1.0-seed1: 2 line(s) of predictions.jsonl unreadable" in proc.stdout
    assert "2 line(s) of predictions.jsonl unreadable" in (out / "report.md").read_text()


def test_out_errors_are_one_line_and_leave_out_as_it_was(tmp_path):
    _copy(tmp_path, "baseline-seed1")
    runs = str(tmp_path / "runs")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    proc = compare(runs, "--out", str(a_file))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert a_file.read_text() == "keep"

    out = tmp_path / "out"
    assert compare(runs, "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    os.chmod(out, 0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as a user who can write to a read-only folder (root)")
        proc = compare(runs, "--out", str(out))
    finally:
        os.chmod(out, 0o755)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_failed_write_changes_nothing(tmp_path, monkeypatch):
    from agentcoder.compare.__main__ import write_whole

    out = tmp_path / "out"
    out.mkdir()
    (out / "comparison.csv").write_text("old")

    def half(stage: Path) -> list[str]:
        (stage / "comparison.csv").write_text("new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_whole(out, half)
    assert [p.name for p in out.iterdir()] == ["comparison.csv"] and (out / "comparison.csv").read_text() == "old"


def test_a_run_whose_process_is_gone_reads_as_killed_with_its_ranks_error(tmp_path):
    """Issue 30, item 10: such a run read as `running` ("still running, or killed"), and the error a
    rank other than 0 left (rank 0 killed before it could take it in) was never shown."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    for name, pid in (("dead", int(gone.stdout)), ("live", os.getpid())):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({
            "status": "running", "method": "debug", "pid": pid, "host": platform.node(), "started_at": now,
            "heartbeat_at": now, "world_size": 2}))
        (run / "error.rank1.txt").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom on rank 1")
    rows = {r.name: r.row for r in load_runs([tmp_path / "runs"])}
    assert rows["dead"]["status"] == "killed"
    assert rows["dead"]["error"].startswith(f"stale: process {gone.stdout.strip()} on {platform.node()} stopped")
    assert rows["dead"]["error"].endswith("; rank 1: RuntimeError: boom on rank 1")
    assert rows["live"]["status"] == "running" and rows["live"]["error"] == "no end recorded: still running"
