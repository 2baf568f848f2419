"""Issue 11, "records that never lie": true status after signals and a full disk, dead runs told
from live ones, sweeps keyed to the config, no secret in any file, no leftovers.

The runs use method=debug (no model).  Where a run must still be going when a signal lands, the
child process replaces the debug method's `run` by one that sleeps: the launcher, its records
and its signal handling are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from filelock import FileLock

from tests.test_preflight_values import cli

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import signal, sys, time
import agentcoder.methods.debug as debug
# A background shell starts children with SIGINT ignored; a user's Ctrl-C is not.
signal.signal(signal.SIGINT, signal.default_int_handler)
def run(cfg, record):
{body}
debug.run = run
sys.argv = ["agentcoder.run", *{args!r}]
import agentcoder.run
agentcoder.run.main()
"""


def child(body: str, args: list[str], cwd: Path) -> subprocess.Popen:
    code = _CHILD.format(body=textwrap.indent(textwrap.dedent(body), "    "), args=args)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sleeping_run(run_dir: Path, cwd: Path) -> subprocess.Popen:
    proc = child('print("started", flush=True)\ntime.sleep(120)',
                 ["method=debug", f"hydra.run.dir={run_dir}"], cwd)
    for line in proc.stdout:  # log lines (a library's warning) may come first
        if line.strip() == "started":
            return proc
    raise AssertionError(proc.stderr.read())


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


# --- Why, bullet 4: `running` forever after SIGTERM or a full disk; dead and live look alike


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_the_run_as_interrupted_status_first(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = sleeping_run(run_dir, tmp_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    data = record(run_dir)
    assert data["status"] == "interrupted" and data["ended_at"], data
    assert sig.name in data["error"] or "KeyboardInterrupt" in data["error"]
    assert "Traceback" in (run_dir / "error.txt").read_text()


def test_full_disk_still_ends_as_failed(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        run_dir = mnt / "run"
        body = """
        with open(record.dir / "big.bin", "wb") as fh:
            while True:
                fh.write(b"x" * 65536)
                fh.flush()
        """
        proc = child(body, ["method=debug", f"hydra.run.dir={run_dir}"], tmp_path)
        proc.wait(timeout=120)
        data = record(run_dir)
        assert data["status"] == "failed" and "No space left" in data["error"], data
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_killed_run_is_told_from_a_live_one(tmp_path):
    from agentcoder.tracking.records import effective_status

    run_dir = tmp_path / "run"
    proc = sleeping_run(run_dir, tmp_path)
    live = record(run_dir)
    assert {"pid", "host", "heartbeat_at"} <= set(live) and live["pid"] == proc.pid
    assert effective_status(live) == "running"
    proc.kill()
    proc.wait(timeout=30)
    dead = record(run_dir)
    assert dead["status"] == "running" and effective_status(dead) == "stale"


def test_an_attempt_killed_before_its_first_heartbeat_lasted_an_unknown_time(tmp_path):
    """Issue 30, item 10: later attempts recorded it with duration_s 0.0."""
    from agentcoder.compare.runs import load_run

    run_dir = tmp_path / "run"
    proc = sleeping_run(run_dir, tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert load_run(run_dir).row["status"] == "killed"
    again = cli("method=debug", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    data = record(run_dir)
    assert data["status"] == "completed" and data["duration_s"] is not None
    assert data["attempts"][0]["status"] == "failed" and data["attempts"][0]["duration_s"] is None
    assert data["total_duration_s"] is None and load_run(run_dir).row["duration_s"] is None


def test_a_run_on_another_host_is_stale_once_its_heartbeat_stops():
    from agentcoder.tracking.records import STALE_AFTER_S, is_stale

    data = {"status": "running", "pid": 1, "host": "elsewhere", "heartbeat_at": "2026-01-01T00:00:00.000+00:00"}
    beat = datetime.fromisoformat(data["heartbeat_at"]).timestamp()
    assert not is_stale(data, now=beat + 5)
    assert is_stale(data, now=beat + STALE_AFTER_S + 1)


def test_sweep_rerun_treats_a_stale_run_as_failed(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "method=debug", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    job = next(d for d in sweep.iterdir() if d.is_dir() and record(d)["seeds"]["seed"] == 2)
    data = record(job)
    data.update(status="running", pid=2**22 + 12345, ended_at=None)  # a pid no process has
    (job / "run.json").write_text(json.dumps(data))
    again = cli(*args, cwd=tmp_path)
    assert "1 completed, 0 failed, 1 skipped" in again.stdout, again.stdout
    assert record(job)["status"] == "completed" and record(job)["resumed_from_status"] == "failed"


def test_a_run_into_a_live_runs_dir_is_refused_before_hydra_writes_there(tmp_path):
    """Issue 30, item 4: the refused run used to overwrite the live run's .hydra/*.yaml first."""
    run_dir = tmp_path / "run"
    proc = sleeping_run(run_dir, tmp_path)
    try:
        hydra_files = {p.name: p.read_text() for p in (run_dir / ".hydra").glob("*.yaml")}
        log_files = {p.name: p.read_text() for p in run_dir.glob("*.log")}
        refused = cli("method=debug", "eval.limit=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr[-2000:]
        (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("agentcoder:")]
        assert f"{run_dir} holds a live run (pid {proc.pid} on" in line, refused.stderr
        assert {p.name: p.read_text() for p in (run_dir / ".hydra").glob("*.yaml")} == hydra_files
        assert {p.name: p.read_text() for p in run_dir.glob("*.log")} == log_files
        assert record(run_dir)["status"] == "running" and record(run_dir)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_sweep_job_whose_config_runs_live_is_refused_in_a_dir_of_its_own(tmp_path):
    sweep = tmp_path / "sweep"
    proc = sleeping_run(sweep / "0", tmp_path)  # method=debug, the config of the sweep's one job
    try:
        hydra_files = {p.name: p.read_text() for p in (sweep / "0" / ".hydra").glob("*.yaml")}
        swept = cli("-m", "method=debug", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        assert swept.returncode == 1
        assert "0 completed, 1 failed (1 before writing a record), 0 skipped" in swept.stdout, swept.stdout
        assert {p.name: p.read_text() for p in (sweep / "0" / ".hydra").glob("*.yaml")} == hydra_files
        assert record(sweep / "0")["pid"] == proc.pid
        refused = record(sweep / "1")
        assert refused["status"] == "failed" and f"{sweep / '0'} holds a live run" in refused["error"], refused
    finally:
        proc.kill()
        proc.wait(timeout=30)


# --- Why, bullet 5: sweeps: jobs dead before their record, concurrent sweeps, skipping by job number


def test_summary_counts_a_job_that_died_before_its_record(tmp_path):
    sweep = tmp_path / "sweep"
    # Each value is fine alone (preflight changes one at a time); 4-bit and 8-bit together are not.
    proc = cli("-m", "method=debug", "quant.load_in_4bit=false,true", "quant.load_in_8bit=false,true",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "3 completed, 1 failed (1 before writing a record), 0 skipped" in proc.stdout, proc.stdout
    statuses = sorted(record(d)["status"] for d in sweep.iterdir() if d.is_dir())
    assert statuses == ["completed", "completed", "completed", "failed"]


def test_a_second_sweep_into_a_locked_dir_stops(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    with FileLock(str(sweep / ".sweep.lock")):
        proc = cli("-m", "method=debug", "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 3
    assert "another sweep is writing into" in proc.stderr
    assert not list(sweep.glob("*/run.json"))


def test_prepending_a_sweep_value_skips_the_completed_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    assert cli("-m", "method=debug", "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    again = cli("-m", "method=debug", "seed=0,1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "1 completed, 0 failed, 2 skipped" in again.stdout, again.stdout
    seeds = sorted(record(d)["seeds"]["seed"] for d in sweep.iterdir() if d.is_dir())
    assert seeds == [0, 1, 2]  # no completed record was overwritten


# --- Why, bullet 6: secrets in Hydra's files and in the record's overrides


def test_no_secret_in_any_file_of_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    literal = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    plain_named = "Zq8vR2mK9xLp4TnW7bYc3HdF6gJs1AeU"  # token-shaped, in a variable with a harmless name
    env = {"SOME_TOKEN": "s3cr3t-value-123", "PLAIN_VAR": plain_named}
    proc = cli("-m", "method=debug", "method.value=1,2", "model.revision=${oc.env:SOME_TOKEN}",
               f"data.hub_id={literal}", "model.hub_id=${oc.env:PLAIN_VAR}", f"hydra.sweep.dir={sweep}",
               cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    files = [p for p in sweep.rglob("*") if p.is_file() and p.name != ".sweep.lock"]
    assert any(p.name == "multirun.yaml" for p in files) and any(p.name == "hydra.yaml" for p in files)
    for path in files:
        text = path.read_text(errors="ignore")
        for secret in (literal, plain_named, env["SOME_TOKEN"]):
            assert secret not in text, (path, secret)


def test_an_interpolated_override_is_recorded_as_typed(tmp_path):
    run_dir = tmp_path / "run"
    value = "Zq8vR2mK9xLp4TnW7bYc3HdF6gJs1AeU"
    proc = cli("method=debug", "model.revision=${oc.env:PLAIN_VAR}", f"hydra.run.dir={run_dir}", cwd=tmp_path,
               env={"PLAIN_VAR": value})
    assert proc.returncode == 0, proc.stderr
    assert "model.revision=${oc.env:PLAIN_VAR}" in record(run_dir)["overrides"]
    assert value not in (run_dir / "run.json").read_text()


# --- Why, bullet 8: leftovers (item 5's bullet, the training log, is the lead's)


def test_run_files_are_readable(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("method=debug", f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    for name in ("run.json", "metrics.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) & 0o044 == 0o044, name


def test_metrics_are_valid_json_with_a_note(tmp_path):
    from agentcoder.tracking.records import RunRecord

    rec = RunRecord(tmp_path, {"status": "running"})
    rec.write()
    rec.complete({"overall": {"value": float("nan"), "loss": float("inf"), "n": 3}})
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert metrics["overall"] == {"value": None, "loss": None, "n": 3}
    assert metrics["non_finite"] == {"overall.value": "nan", "overall.loss": "inf"}


def test_interrupted_conversion_is_cleaned_up_on_next_start(tmp_path):
    from agentcoder.assets import sha256_file
    from agentcoder.models.embedded import embedded_model_dir

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not really a gguf")
    name = f"tiny-{sha256_file(gguf)[:8]}"
    models = tmp_path / "cache" / "models"
    (models / name).mkdir(parents=True)
    (models / name / "config.json").write_text("{}")  # converted before
    stale = models / f".{name}.build-abc123"
    (stale / "hf").mkdir(parents=True)
    (stale / "hf" / "model.safetensors").write_bytes(b"\0" * 1024)  # what a SIGKILL left
    cfg = type("M", (), {"name": "tiny", "gguf_path": str(gguf), "embedded": None})()
    assert embedded_model_dir(cfg, tmp_path / "cache") == models / name
    assert not stale.exists()


def test_heartbeat_is_rewritten_while_running_and_stops_at_the_end(tmp_path, monkeypatch):
    import time

    from agentcoder.tracking import records
    from tests.helpers import compose_cfg

    monkeypatch.setattr(records, "HEARTBEAT_S", 0.05)
    rec = records.RunRecord.start(tmp_path, compose_cfg("method=debug"), {})
    first = record(tmp_path)["heartbeat_at"]
    beats = set()
    deadline = time.time() + 5
    while len(beats) < 3 and time.time() < deadline:
        beats.add(record(tmp_path)["heartbeat_at"])  # always whole JSON: atomic rewrites
        time.sleep(0.02)
    assert len(beats - {first}) >= 2
    rec.complete(None)
    final = record(tmp_path)
    time.sleep(0.2)
    assert record(tmp_path) == final and final["status"] == "completed"
