"""Issue 11, "every bad value caught up front": preflight rejects what would fail late or silently,
one line per problem, without torch and without creating a run dir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentcoder.config import ConfigError
from agentcoder.preflight import CONF_DIR, check_overrides

ROOT = Path(__file__).resolve().parents[1]
# The training stack: loading it is what would make an up-front config error slow to answer.
ML_STACK = ("torch", "transformers", "datasets", "peft", "trl", "accelerate", "bitsandbytes")


def preflight_errors(*overrides: str) -> list[str]:
    try:
        check_overrides(CONF_DIR, list(overrides))
    except ConfigError as err:
        return str(err).splitlines()
    return []


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m agentcoder.run ARGS` from CWD (so a run dir, if any, lands under CWD).

    proc.imported: the top-level packages the process imported, from `-X importtime`, whose lines
    are taken out of proc.stderr.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "agentcoder.run", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    stderr = proc.stderr.splitlines(keepends=True)
    timings = [ln for ln in stderr if ln.startswith("import time:")]
    proc.stderr = "".join(ln for ln in stderr if not ln.startswith("import time:"))
    proc.imported = {ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in timings[1:]}
    return proc


def run_dirs(cwd: Path) -> list[Path]:
    return [p.parent for sub in ("outputs", "multirun") for p in (cwd / sub).glob("**/.hydra")]


# --- Why, bullet 1: values accepted by preflight that failed late (after torch, with a run dir)

LATE = [
    (["method=debug", "seed=-1"], "seed=-1"),
    (["method=debug", f"seed={2**40}"], f"seed={2**40}"),
    (["method=lora", "method.train.logging_steps=0"], "method.train.logging_steps=0"),
    (["method=lora", "method.train.epochs=inf"], "method.train.epochs=inf"),
    (["model.attn_implementation=bogus"], "model.attn_implementation=bogus"),
    (["model.adapter=/nonexistent"], "model.adapter=/nonexistent"),
    (["data.categories=[nope]"], "data.categories has ['nope']"),
    (["method=dpo"], "method=dpo is not available yet"),  # with dpo marked planned (all are built now)
]


@pytest.fixture
def dpo_planned(monkeypatch):
    """Every method is built today; mark dpo planned again, as a method whose module is not written yet."""
    from agentcoder.config import METHODS, DpoMethod, MethodSpec

    monkeypatch.setitem(METHODS, "dpo", MethodSpec(DpoMethod, None))


@pytest.mark.parametrize(("overrides", "expected"), LATE, ids=[e for _, e in LATE])
def test_values_that_failed_late_fail_in_preflight(overrides, expected, dpo_planned):
    errors = preflight_errors(*overrides)
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_tracker_that_is_not_installed_fails_in_preflight():
    errors = preflight_errors("method=lora", "method.train.report_to=[wandb]")
    assert errors and "wandb" in errors[0] and "not installed" in errors[0]


# The launcher with dpo marked planned (as before its module existed), run as a user runs it.
_PLANNED_DPO = (
    "import sys; from agentcoder.config import METHODS, DpoMethod, MethodSpec; "
    "METHODS['dpo'] = MethodSpec(DpoMethod, None); import agentcoder.run as r; sys.argv[0] = 'agentcoder.run'; "
    "r.main()"
)


def test_planned_method_creates_no_run_dir(tmp_path):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-c", _PLANNED_DPO, "method=dpo"], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentcoder: config error: method=dpo is not available yet")
    assert run_dirs(tmp_path) == []


def test_planned_method_still_shows_its_config(tmp_path):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-c", _PLANNED_DPO, "method=dpo", "--cfg", "job"], cwd=tmp_path,
                          env=full_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "name: dpo" in proc.stdout


# --- Why, bullet 2: values accepted silently


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.max_examples=-3"], "data.max_examples=-3"),
        (["data.path=/tmp/x.jsonl"], "data.path=/tmp/x.jsonl is not read by data=bfcl"),
        (["method=debug", "method.value=nan"], "method.value=nan"),
        (["eval.irrelevance_unparsed=maybe"],
         "eval.irrelevance_unparsed=maybe is not allowed; expected one of correct, wrong"),
    ],
)
def test_values_that_were_accepted_silently_are_rejected(overrides, expected):
    errors = preflight_errors(*overrides)
    assert len(errors) == 1 and expected in errors[0], errors


def test_resume_from_an_empty_dir_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("method=debug", f"resume_from={empty}", cwd=tmp_path)
    assert proc.returncode == 2 and "holds no run.json" in proc.stderr
    assert list(empty.iterdir()) == []


def test_resume_from_a_run_of_another_config_is_refused_naming_the_difference(tmp_path):
    run = tmp_path / "run"
    assert cli("method=debug", "method.value=1", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    before = (run / "run.json").read_text()
    proc = cli("method=debug", "method.value=2", f"resume_from={run}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another config" in lines[0], lines
    assert re.search(r"method\.value: 1(\.0)? -> 2", lines[0]), lines
    assert (run / "run.json").read_text() == before

    same = cli("method=debug", "method.value=1", f"resume_from={run}", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["skipped_at"]  # same config: accepted (and done)


def test_a_killed_run_re_run_in_its_dir_under_another_config_is_refused_unless_resume_false(tmp_path):
    """`hydra.run.dir=<a killed run> method.train.lr=...` would go on from that run's checkpoints under
    another config: the same check as resume_from refuses it before anything is written; resume=false
    starts it over."""
    run = tmp_path / "run"
    assert cli("method=debug", "method.value=1", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    record = json.loads((run / "run.json").read_text())
    record["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(record))
    before = (run / "run.json").read_text()
    errors = preflight_errors("method=debug", "method.value=2", f"hydra.run.dir={run}")
    assert len(errors) == 1 and "holds a killed debug run of another config" in errors[0], errors
    assert re.search(r"method\.value: 1(\.0)? -> 2", errors[0]) and "resume=false" in errors[0]
    assert (run / "run.json").read_text() == before
    assert preflight_errors("method=debug", "method.value=1", f"hydra.run.dir={run}") == []
    assert preflight_errors("method=debug", "method.value=2", "resume=false", f"hydra.run.dir={run}") == []


# --- Why, bullet 3: raw Hydra tracebacks, whole values echoed, advice that is then rejected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["method=null"], "method=null: 'method' needs an option"),
        (["model=null"], "model=null: 'model' needs an option"),
        (["method=debug", "seed=" + "9" * 5000], "Exceeds the limit (4300 digits)"),
        (["model.revision=${oc.env:AGENTCODER_SURELY_UNSET}"], "AGENTCODER_SURELY_UNSET"),
        (["model.attn_implementation=" + "x" * 100_000], "…(100000 chars)"),
    ],
    ids=["method-null", "model-null", "5000-digit-seed", "unset-env", "100k-value"],
)
def test_hydra_errors_are_one_short_line(tmp_path, args, expected):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[:2000]
    assert expected in lines[0] and len(lines[0]) < 500
    assert run_dirs(tmp_path) == []
    assert "hydra" in proc.imported and not proc.imported & set(ML_STACK), proc.imported & set(ML_STACK)


def test_unknown_key_advice_is_not_rejected_advice():
    (line,) = preflight_errors("foo=1")
    assert "unknown config key 'foo'" in line
    assert "+foo" not in line  # +foo=1 is rejected too: no schema has the key


def test_every_error_gets_its_own_line(tmp_path):
    proc = cli("method=debug", "seed=-1", "eval.limit=0", "data.max_examples=0", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 3, lines
    assert [ln.split(": ", 2)[2].split("=")[0] for ln in lines] == ["seed", "data.max_examples", "eval.limit"]


def test_preflight_stays_off_the_ml_stack():
    code = (
        "import sys\n"
        "sys.argv = ['agentcoder.run', 'method=lora', 'seed=-1', 'model.adapter=/nope', 'method.train.report_to=[x]']\n"
        "import agentcoder.run as r\n"
        "try:\n    r.main()\nexcept SystemExit as e:\n    assert e.code == 2\n"
        f"print(sorted(m for m in {ML_STACK!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_sweep_in_an_experiment_overlay_is_checked_job_by_job(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "bad.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n"
        "      method: debug,nope\n      data_fraction: 0.5,1.5\n")
    with pytest.raises(ConfigError) as err:
        check_overrides(conf, ["experiment=bad"], multirun=True)
    text = str(err.value)
    assert "nope" in text and "data_fraction=1.5" in text, text
    check_overrides(conf, ["experiment=bad"])  # a single run ignores the overlay's sweep
    # A command-line sweep of a key replaces the overlay's list of it, so only that list is checked.
    with pytest.raises(ConfigError, match="nope"):
        check_overrides(conf, ["experiment=bad", "data_fraction=0.5"], multirun=True)
    check_overrides(conf, ["experiment=bad", "method=debug", "data_fraction=0.5"], multirun=True)


def test_sft_train_sets_the_lora_runs_and_the_stage_training_alike(tmp_path):
    from agentcoder.methods.stages import sft_stage_config, stage_key
    from agentcoder.preflight import compose_config

    lora = compose_config(["method=lora", "+sft_train.epochs=1", "+sft_train.val_limit=8"])
    assert lora.method.train.epochs == 1 and lora.method.train.val_limit == 8
    dpo = compose_config(["method=dpo", "+sft_train.epochs=1", "+sft_train.val_limit=8"])
    assert stage_key(sft_stage_config(dpo)) == stage_key(lora)
    assert stage_key(sft_stage_config(compose_config(["method=dpo"]))) != stage_key(lora)
    assert any("sft_train.nope is not a method.train setting" in e for e in preflight_errors("+sft_train.nope=1"))
    proc = cli("method=lora", "sft_train.epochs=1", "--cfg", "job", cwd=tmp_path)  # no `+` needed
    assert proc.returncode == 0 and "epochs: 1" in proc.stdout, proc.stderr
